dim d_model as D
model M {
    param w: [D, Q]
    forward(x: [D]) { return x * 2 }
}
