dim d_model as D
convention mine "norm outputs" {
    count output of kind nrom
}
model M {
    param w: [D]
    forward(x: [D]) { return x * w }
}
