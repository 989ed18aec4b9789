dim d_model as D
layer A(n) {
    inner = A(n)
    forward(x: [n]) { return inner(x) }
}
model M {
    a = A(D)
    forward(x: [D]) { return a(x) }
}
