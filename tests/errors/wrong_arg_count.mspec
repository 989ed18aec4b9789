use std
dim d_model as D
model M {
    lin = Linear(D, D, true, 4)
    forward(x: [D]) { return lin(x) }
}
