use std
dim d_model as D
model M {
    lin = Linear(D, D)
    forward(x: [D]) { return lin(x) }
}
recompute mine "the attention core, misspelt" {
    checkpoint each call of atention
}
