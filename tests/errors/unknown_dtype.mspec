dim d_model as D
model M {
    param w: float33[D]
    forward(x: [D]) { return x * w }
}
