"""The paper's CIFAR-10 experiments (ResNet-32/56)."""
