use "cyclic_use_b.mspec"
dim d_model as D
model M {
    forward(x: [D]) { return x }
}
