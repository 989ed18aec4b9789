dim d_model as D
model M {
    param w: [(D + 1) ** 1000]
    forward(x: [D]) { return x }
}
