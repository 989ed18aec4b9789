dim tokens as T
dim d_model as D
model M {
    param w: [D, D]
    forward(x: [T, D]) {
        top = topk(linear(x, w), 2)
        return top
    }
}
