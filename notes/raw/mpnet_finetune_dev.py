"""Experiment (dev only): fine-tune all-mpnet-base-v2 with the bundle's recipe, links dropped."""
import sys, time, importlib
sys.path.insert(0, '/work/main')
from pathlib import Path
import transformers
from tokenizers import Tokenizer, Regex, normalizers
from stream.models import finetune as ft
from stream.models import fit_heads, train
from stream.models.links import LINK_PATTERN
from stream.data.crisismmd import load_split, find_dataset, SPLITS

MP = Path('/tmp/mp/model/all-mpnet-base-v2')
tok = Tokenizer.from_file(str(MP / 'tokenizer.json'))
tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(LINK_PATTERN), ''), tok.normalizer])
tok.save('/tmp/exp/mp-tokenizer.json')

class Auto:
    @staticmethod
    def from_pretrained(path, add_pooling_layer=False, attn_implementation='eager'):
        return transformers.MPNetModel.from_pretrained(path, add_pooling_layer=add_pooling_layer)
transformers.BertModel = Auto

def pooled(torch, bert, ids, mask):
    states = bert(input_ids=ids, attention_mask=mask)
    m = mask.unsqueeze(-1).to(states.last_hidden_state.dtype)
    mean = (states.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)
ft._pooled = pooled

d = find_dataset()
rows = {(t, s): load_split(d, t, s) for t in train.LABELS for s in SPLITS}
held_out = fit_heads.held_out(rows, fit_heads.informative_all(d))
t0 = time.time()
res = ft.finetune({t: rows[(t, 'train')] for t in train.LABELS}, {t: rows[(t, 'dev')] for t in train.LABELS},
                  held_out, train.LABELS, MP, Path('/tmp/exp/mp-ft'), lambda m: print(f'[{time.time()-t0:7.1f}s] {m}', flush=True),
                  ft.FinetuneConfig(epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 2),
                  tokenizer=Path('/tmp/exp/mp-tokenizer.json'))
print('done', time.time() - t0)
