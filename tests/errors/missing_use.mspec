use "no_such_file.mspec"
dim d_model as D
model M {
    forward(x: [D]) { return x }
}
