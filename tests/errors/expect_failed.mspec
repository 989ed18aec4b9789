use std
dim d_model as D
model M {
    lin = Linear(D, D)
    forward(x: [D]) { return lin(x) }
}
preset small { D = 8 }
expect params == 65 at small
