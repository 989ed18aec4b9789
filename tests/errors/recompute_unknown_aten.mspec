use std
dim d_model as D
model M {
    lin = Linear(D, D)
    forward(x: [D]) { return lin(x) }
}
recompute mine "keep the products, misspelt" {
    checkpoint each repeat
    save aten mmm
}
