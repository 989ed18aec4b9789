dim d_model as D
dim depth as D
model M {
    forward(x: [D]) { return x }
}
