"""The PyTorch side of `cargo xtask bench train`: textrec's CharCnn and LineCtc, layer for layer,
trained on the same synthetic batches shapes with the same optimiser (AdamW, weight decay 1e-4,
gradient norm clipped at 1.0). Prints one JSON object. Arguments: see parse() below."""

import json
import os
import sys
import time

import torch
from torch import nn


class CharCnn(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.dropout(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class LineCtc(nn.Module):
    def __init__(self, classes, height=32, channels=(32, 64, 96), hidden=128):
        super().__init__()
        c1, c2, c3 = channels
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU())
            for a, b in [(1, c1), (c1, c2), (c2, c3)]
        )
        self.pool = nn.MaxPool2d(2)
        self.pool_height = nn.MaxPool2d((2, 1))
        self.lstm = nn.LSTM(c3 * (height // 8), hidden, bidirectional=True)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        x = self.pool(self.blocks[0](x))
        x = self.pool(self.blocks[1](x))
        x = self.pool_height(self.blocks[2](x))
        batch, channels, height, steps = x.shape
        x = x.permute(3, 0, 1, 2).reshape(steps, batch, channels * height)
        states, _ = self.lstm(x)
        return torch.log_softmax(self.head(self.dropout(states)), 2)


def time_steps(network, loss_of, batches, warmup, steps):
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    network.train()
    samples, started = 0, time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            samples, started = 0, time.perf_counter()
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = loss_of(network, batch)
        loss.item()
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        samples += batch[0].shape[0]
    seconds = time.perf_counter() - started
    return {"samples_per_second": samples / seconds, "steps": steps, "seconds": seconds}


def parse():
    args = dict(arg.split("=", 1) for arg in sys.argv[1:])
    return {k: int(v) for k, v in args.items()}


def main():
    a = parse()
    torch.manual_seed(7)
    torch.set_num_threads(a["threads"])
    classes = a["classes"]
    chars = [
        (torch.rand(a["char_batch"], 1, 28, 28), torch.randint(0, classes, (a["char_batch"],)))
        for _ in range(4)
    ]
    cross_entropy = nn.CrossEntropyLoss()
    char = time_steps(
        CharCnn(classes),
        lambda net, b: cross_entropy(net(b[0]), b[1]),
        chars,
        3,
        a["char_steps"],
    )
    n, width, length = a["line_batch"], a["line_width"], a["label_len"]
    vocabulary = a["line_classes"]
    lines = [
        (torch.rand(n, 1, 32, width), torch.randint(1, vocabulary, (n, length)))
        for _ in range(4)
    ]
    ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=False)
    steps = width // 4

    def line_loss(net, b):
        log_probs = net(b[0])
        return ctc(
            log_probs,
            b[1],
            torch.full((n,), steps, dtype=torch.long),
            torch.full((n,), length, dtype=torch.long),
        )

    line = time_steps(LineCtc(vocabulary), line_loss, lines, 2, a["line_steps"])
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "char_cnn": char, "line_ctc": line}))


if __name__ == "__main__":
    main()
