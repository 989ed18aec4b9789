use std
dim d_model as D
model M {
    param w: [D]
    forward(x: [D]) { return Linear(x) * w }
}
