"""The toy world as a plug-in: the `toy` model source (base models pretrained here, by the hash of
their pretraining) and the four toy benchmarks. src/plugins.py imports this module; nothing in
config, models or benchmarks names the toy world."""

from __future__ import annotations

from src.benchmarks import BENCHMARKS, Benchmark
from src.config import ModelConfig
from src.models.sources import SOURCES, ModelSource
from src.report.answers import STYLE_MARKERS
from src.store import cache_root
from src.toyworld.benchmarks import cloze, mc, qa, style
from src.toyworld.pretrain import pretrained_dir, spec_key, toy_spec


def _identity(cfg: ModelConfig) -> dict:
    """The pretraining hash covers the corpus's templates too (code, not config), so an edited corpus
    is never a stale hit in the cell store or the base-score cache."""
    return {"toy_weights": spec_key(cfg)}


SOURCES.register("toy", ModelSource(location=lambda cfg, cache_dir: str(pretrained_dir(cfg, cache_dir)),
                                    validate=lambda cfg: toy_spec(cfg.toy), identity=_identity,
                                    writes_inputs=lambda cfg, cache_dir: cache_root(cache_dir) / "toyworld" / "data"))

# the same study on a synthetic world small enough for a laptop
BENCHMARKS.register("toy_qa", Benchmark(qa.ToyQASettings, qa.run))
BENCHMARKS.register("toy_cloze", Benchmark(cloze.ToyClozeSettings, cloze.run))
BENCHMARKS.register("toy_mc", Benchmark(mc.ToyMCSettings, mc.run))
BENCHMARKS.register("toy_style", Benchmark(style.ToyStyleSettings, style.run))
STYLE_MARKERS["toy"] = style.style_flags  # the side-by-side answers mark the toy teacher's manner too
