dim d_model as D
model M {
    param w: [D]
    forward(x: [D]) {
        y = D * 2 : [D]
        return x * w
    }
}
