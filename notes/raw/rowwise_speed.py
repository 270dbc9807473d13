import sys, time
from pathlib import Path
import numpy as np, onnxruntime as ort
sys.path.insert(0, "bench")
from common import crisis_texts, interleaved_ratios, unique_texts
from stream.models import rowwise, export
from stream.models.text import TextEncoder
b = Path("models/minilm-crisis"); tok = b / "tokenizer.json"; fp32 = b / "text_encoder.fp32.onnx"
texts = unique_texts(crisis_texts(["dev"]))[:128]

def act_ql(self, x):
    if x not in self.quantized:
        p = f"rw/{len(self.quantized)}/"
        if "rw_one" not in self.inits:
            self.inits["rw_one"] = None; self._const("rw_one", np.array(1.0, np.float32))
        absx = self._node("Abs", [x], p + "abs")
        amax = self._node("ReduceMax", [absx], p + "amax", axes=[-1], keepdims=1)
        scale = self._node("Div", [self._node("Max", [amax, "rw_eps"], p + "amax_eps"), "rw_qmax_a"], p + "scale")
        div = self._node("Div", [x, scale], p + "div")
        q = self._node("QuantizeLinear", [div, "rw_one", "rw_zero_u8"], p + "q")
        self.quantized[x] = (q, scale)
    return self.quantized[x]

rowwise.quantize_rowwise(fp32, Path("/tmp/pt.onnx"))
orig = rowwise._Rewriter.activation
rowwise._Rewriter.activation = act_ql
rowwise.quantize_rowwise(fp32, Path("/tmp/pt_ql.onnx"))
rowwise._Rewriter.activation = orig
export.quantize_int8(fp32, Path("/tmp/ptensor.onnx"), export.CANDIDATES[3])
def enc(path, level):
    e = TextEncoder(path, tok, 128, None, 32)
    o = ort.SessionOptions(); o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.graph_optimization_level = level; o.inter_op_num_threads = 1
    e.session = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
    return e
A, E = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
encs = {"pt all": enc("/tmp/pt.onnx", A), "pt ext": enc("/tmp/pt.onnx", E), "pt_ql all": enc("/tmp/pt_ql.onnx", A),
        "pt_ql ext": enc("/tmp/pt_ql.onnx", E), "ptensor all": enc("/tmp/ptensor.onnx", A), "ptensor ext": enc("/tmp/ptensor.onnx", E),
        "fp32 all": enc(fp32, A), "fp32 ext": enc(fp32, E)}
ref = encs["pt all"].encode(texts).embeddings
for k in ("pt ext", "pt_ql all", "pt_ql ext"):
    print(k, "max abs diff vs pt all", float(np.abs(encs[k].encode(texts).embeddings - ref).max()))
q, r = interleaved_ratios({k: (lambda e=e: len(e.encode(texts).embeddings)) for k, e in encs.items()}, "pt all", 5, 0.5)
for k in encs: print(f"{k}: {q[k]:.3f} ({r[k]:.0f} texts/s)")
