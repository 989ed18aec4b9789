use std
dim d_model as D
model M {
    lin = Linear(D, D)
    forward(x: [D]) { return lin(x) }
}
train { recompute selectiv }
