"""A small CNN on scikit-learn's 8 x 8 handwritten digits, written as a PyTorch user writes it:
a Dataset and DataLoader, an nn.Module subclass, CrossEntropyLoss, an optimizer loop, and
``out.max(1)`` for the predicted class. Replace ``npad`` by ``torch`` and it runs on PyTorch.

    python examples/digits_cnn.py            # about 98% test accuracy, 20-30 s on 2 cores
"""
import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import npad
import npad.nn as nn
import npad.nn.functional as F
from npad.utils.data import DataLoader, TensorDataset


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x):                                     # B x 1 x 8 x 8
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)            # B x 32 x 4 x 4
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)            # B x 64 x 2 x 2
        return self.fc(x.flatten(1))                          # B x 10 logits


def main(epochs=12):
    npad.manual_seed(0)
    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16  # N x 1 x 8 x 8 in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.25, random_state=0)
    train = DataLoader(TensorDataset(npad.tensor(x_train), npad.tensor(y_train)), batch_size=32, shuffle=True)
    test = DataLoader(TensorDataset(npad.tensor(x_test), npad.tensor(y_test)), batch_size=256)

    model = DigitsCNN()
    criterion = nn.CrossEntropyLoss()
    optimizer = npad.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = npad.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for x, y in train:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        scheduler.step()
        model.eval()
        correct = 0
        with npad.no_grad():
            for x, y in test:
                _, predicted = model(x).max(1)
                correct += (predicted == y).sum().item()
        accuracy = correct / len(y_test)
        print(f"epoch {epoch + 1:2d}  train loss {total / len(y_train):.4f}  test accuracy {100 * accuracy:.2f}%  "
              f"({time.time() - start:.1f} s)")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    main(parser.parse_args().epochs)
