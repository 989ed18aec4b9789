# Losses.

# Cross-entropy over the last dim, mean over all positions: log-softmax, then the
# negative log-likelihood of the integer targets (torch.nn.functional.cross_entropy).
fn cross_entropy(logits: [..., classes], targets: [...]) {
    log_probs = log_softmax(logits)
    return nll_loss(log_probs, targets)
}

# Hugging Face's ForCausalLMLoss shifts the labels inside the loss: padded by one ignored
# position, sliced, made contiguous: a copy, but at B = 1 a view of the padded labels,
# which nll_loss then saves (one element more).
fn hf_shift_labels(labels: [b, s]) -> [b, s] {
    return contiguous(narrow(pad(labels, right = 1, value = -100), -1, 1, s))
}
