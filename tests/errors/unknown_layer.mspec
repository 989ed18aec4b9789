use std
dim d_model as D
model M {
    lin = Linaer(D, D)
    forward(x: [D]) { return lin(x) }
}
