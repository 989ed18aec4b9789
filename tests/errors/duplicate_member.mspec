dim d_model as D
model M {
    param w: [D]
    param w: [D]
    forward(x: [D]) { return x * w }
}
