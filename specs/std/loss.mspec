# Losses.

# Cross-entropy over the last dim, mean over all positions: log-softmax, then the
# negative log-likelihood of the integer targets (torch.nn.functional.cross_entropy).
fn cross_entropy(logits: [..., classes], targets: [...]) {
    log_probs = log_softmax(logits)
    return nll_loss(log_probs, targets)
}
