# The PyTorch Quickstart NeuralNetwork: Flatten, Linear 784 -> 512, ReLU,
# Linear 512 -> 512, ReLU, Linear 512 -> 10, biases everywhere; cross-entropy loss.
use std

dim batch_size  as B
dim image_size  as I
dim d_ff        as F
dim num_classes as C

model NeuralNetwork {
    fc1 = Linear(I * I, F, bias = true)
    fc2 = Linear(F, F, bias = true)
    fc3 = Linear(F, C, bias = true)
    forward(images: [B, I, I], labels: int64[B]) {
        x = rearrange(images, "b h w -> b (h w)")          # Flatten: a view
        logits = fc3(relu(fc2(relu(fc1(x)))))  : [B, C]
        return cross_entropy(logits, labels)
    }
}

preset quickstart { I = 28, F = 512, C = 10, B = 64 }
expect params == I*I*F + F + F*F + F + F*C + C
expect params == 669_706 at quickstart

assume "names fc1, fc2, fc3 stand for the quickstart's linear_relu_stack.0, .2 and .4"
assume "ReLU is not in place; no dropout"
