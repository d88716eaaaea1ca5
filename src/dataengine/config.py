"""One config for a whole run, in YAML. Every field has a default: `dataengine loop` needs none.

Unknown keys are refused with the closest valid name, and every name that chooses something (a
strategy, a generator, a model family...) is checked against its registry, before any work starts.
Loading a config imports no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .benchmarks.answers import PROMPTS
from .embed import EMBEDDERS
from .errors import DataError
from .evaluate import METHODS
from .generate import GENERATORS
from .generate.align import KINDS as ALIGN_KINDS
from .llm.client import LLMConfig
from .models.tiny import TinyConfig
from .records import read_text
from .registry import closest
from .sample import STRATEGIES
from .train.config import DPOTrainConfig, TrainConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldConfig(Section):
    """The embedded synthetic world: used when `data` names no real files."""
    pool_size: int = Field(5000, ge=1)
    benchmark_per_type: int = Field(220, ge=1)  # 70% held out: about 150 a type, a standard error near 4 points
    image_size: int = Field(96, ge=32)
    # Round 0's training set is deliberately imbalanced, so the loop has weaknesses to find.
    starter: dict[int, int] = {1: 400, 2: 400, 3: 400, 4: 30, 5: 400, 6: 30, 7: 30, 8: 400, 9: 30}
    # For hallucination work (HA-DPO): shapes that go together (render.PARTNERS) with this chance, and
    # starter items that describe an image and that ask whether an object is there (yes / no), as
    # LLaVA's instruction mix carries detailed descriptions and VQAv2's yes/no questions.
    cooccurrence: float = Field(0.0, ge=0, le=1)
    descriptions: int = Field(0, ge=0)
    existence: int = Field(0, ge=0)

    @field_validator("starter")
    @classmethod
    def seed_types(cls, v: dict[int, int]) -> dict[int, int]:
        bad = next(((t, n) for t, n in v.items() if not 1 <= t <= 9 or n < 0), None)
        if bad:
            raise ValueError(f"type {bad[0]}: {bad[1]} items; the starter has SEED-Bench types 1-9, each with 0 or more items")
        return v


class DataConfig(Section):
    """Real files. Relative paths are taken from the directory you run in."""
    benchmark: str | None = None  # SEED-Bench JSON, or an MMBench TSV (by the .tsv extension)
    image_root: str | None = None  # the pool's and the original data's images
    pool: str | None = None  # image annotations, JSON lines of ImageAnnotation
    original: str | None = None  # the original training data, JSON lines of Sample
    # The benchmark's images, when they are not under image_root; for an MMBench TSV, where its
    # images are written (default: benchmark_images/ in the run directory).
    benchmark_image_root: str | None = None

    @model_validator(mode="after")
    def all_or_none(self):
        given = [k for k in ("benchmark", "image_root", "pool", "original", "benchmark_image_root") if getattr(self, k)]
        if given and not all(getattr(self, k) for k in ("benchmark", "image_root", "pool", "original")):
            missing = next(k for k in ("benchmark", "image_root", "pool", "original") if not getattr(self, k))
            raise ValueError(f"{missing} is needed when {given[0]} is given")
        return self


class ModelConfig(Section):
    path: str | None = None  # a checkpoint; None builds the tiny default model
    tiny: TinyConfig = TinyConfig()
    base_epochs: float = 4.0  # round 0 training of the tiny model on the original data
    # the tiny model's vision tower, on the pool's annotations; 0 skips. 1,500 steps, not 600: its probe
    # then tells an object's count at 86% (61%) and its contact with another at 69% (40%)
    vision_pretrain_steps: int = Field(1500, ge=0)
    # Further per-patch labels for that pretraining (models.vision.EXTRA_KINDS: count, contact), and
    # whether a patch is labelled by the drawn pixels of the world's shapes rather than by the boxes.
    vision_labels: list[Literal["count", "contact"]] = ["count", "contact"]
    vision_masks: bool = True
    # LLaVA's alignment stage for the tiny model, after the vision pretraining and before round 0's
    # instruction data: the pool's captions, region descriptions ("regions") or both; "relations" adds
    # how pairs of objects lie, "grounding" one object per image asked for by its phrase and answered
    # with where it lies (generate/align.py); "none" skips.
    # Three epochs, not one: after one the language model cannot yet name a sign's word that the vision
    # tower already tells apart, and Text Understanding stays at chance (README, "Headline").
    align: str = "regions"
    align_epochs: float = Field(3.0, ge=0)

    @field_validator("align")
    @classmethod
    def known_align(cls, v: str) -> str:
        return ALIGN_KINDS.check(v)

    @field_validator("vision_pretrain_steps")
    @classmethod
    def enough_steps(cls, v: int) -> int:
        if 0 < v < 10:
            raise ValueError(f"{v} steps: at least 10 (or 0 to skip vision pretraining)")
        return v
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # for evaluation; bfloat16 for 7B models on a GPU


class EvalConfig(Section):
    method: str = "likelihood"  # or "letter" (evaluate.METHODS)
    batch_size: int = Field(16, ge=1)
    # Per type, this share of the benchmark is held out as the "report" part: planning and generation
    # see only the rest (the "diagnosis" part), so the reported gain is not measured on the questions
    # that steered the data. 0: no split.
    held_out: float = Field(0.7, ge=0, lt=1)
    blind: bool = True  # also evaluate with grey pictures: what the model answers from priors alone (eval/blind/)
    # method "letter": the options' layout ("llava" or "mmbench"), the reply's length, and an LLM judge
    # (the `llm` section's server) for replies that name no option, as VLMEvalKit falls back to one
    prompt: str = "llava"
    max_new_tokens: int = Field(32, ge=1)
    judge: Literal["off", "llm"] = "off"
    circular: bool = False  # CircularEval (MMBench's way): each question once per rotation; circular.json
    # N > 0: every round's model also answers N held-out multi-round dialogs (`dialog.benchmark`, built
    # once into the run's world folder: world/dialog.json, pictures under world/images/dialog), and
    # summary.json reports their accuracy per turn and format compliance (round_k/dialog/)
    dialog: int = Field(0, ge=0)

    @field_validator("method")
    @classmethod
    def known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @field_validator("prompt")
    @classmethod
    def known_prompt(cls, v: str) -> str:
        return PROMPTS.check(v)


class SampleConfig(Section):
    # sample.STRATEGIES. The paper's v1 "error" (1 - a_i): over 3 seeds it gave the base model's weakest
    # types more than v2's "sqrt-error" did in every seed, and the same or better overall accuracy
    # (bench/abs_vs_uniform.py; README, "Headline"). "progress" (this project's) did not beat it.
    strategy: str = "error"
    budget: int = Field(1200, ge=0)  # incremental items per round
    examples_per_type: int = Field(10, ge=0)
    dedup_threshold: float = 0.9

    @field_validator("strategy")
    @classmethod
    def known_strategy(cls, v: str) -> str:
        return STRATEGIES.check(v)


class GenerateConfig(Section):
    generator: str = "grounded"  # or "llm" (generate.GENERATORS)
    focus: float = 0.5  # grounded: share of items aimed at the bad cases' answers
    oversample: int = 3  # candidates drawn per wanted item, then balanced by answer (use 1 for an LLM)
    max_images: float | None = None  # images tried per wanted item (None: all); bounds the LLM calls
    selection: Literal["random", "similar"] = "random"  # "similar": half like the bad cases (needs embed.model)
    template: str = "generate-v1"  # the prompt template file (prompts/<name>.yaml)
    prompts: str | None = None  # a prompt store from `dataengine ipo`; None: the run's own, else the template
    # Benchmark category -> the SEED-Bench type (1-9) whose generator writes its items; adds to and
    # overrides benchmarks.mmbench.MMBENCH_TYPES. Categories with no type get no items.
    type_map: dict[str, int] = {}

    @field_validator("generator")
    @classmethod
    def known_generator(cls, v: str) -> str:
        return GENERATORS.check(v)

    @field_validator("type_map")
    @classmethod
    def seed_types_only(cls, v: dict[str, int]) -> dict[str, int]:
        bad = next(((k, t) for k, t in v.items() if not 1 <= t <= 9), None)
        if bad:
            raise ValueError(f"category {bad[0]!r} maps to {bad[1]}; the generators write SEED-Bench types 1-9")
        return v


class IPOConfig(Section):
    """Interactive Prompt Optimization, run automatically before round 1 when the generator is an LLM."""
    rounds: int = 2  # rewrites; 0 measures the template's prompt only
    per_type: int = 2  # images per type on which each version is judged
    target: float = 0.9
    clarify: bool = True  # the first rewrite asks which rules are confusing, before any failure is seen
    types: list[int] | None = None  # question types judged (None: all)


class EmbedConfig(Section):
    model: str = "none"  # "minilm": sentence embeddings (llm extra); "none": text overlap (embed.EMBEDDERS)

    @field_validator("model")
    @classmethod
    def known_model(cls, v: str) -> str:
        return EMBEDDERS.check(v)


class FilterConfig(Section):
    similarity: float = 0.9  # near-duplicate threshold (cosine), with embed.model set
    # "image": near-duplicates among items about the same image (templated synthetic questions
    # repeat across images by design); "global": across all items and against benchmark questions.
    scope: Literal["image", "global"] = "image"
    # "drop": items the annotation can neither confirm nor contradict are dropped too (for LLM items
    # on a pool whose annotation is complete, like the synthetic world's); "keep" for sparse real ones.
    unverifiable: Literal["keep", "drop"] = "keep"
    # Drop items answered correctly without the image: by the model the round trains ("model", shown a
    # grey picture) or by the LLM given the question and options alone ("llm"), after MMStar.
    blind: Literal["off", "model", "llm"] = "off"


class RoundTrainConfig(TrainConfig):
    """A loop round's training: TrainConfig with the round's own defaults (2 epochs, the vision tower
    frozen), which a config's `train:` section keeps unless it sets them."""
    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(2.0, gt=0)
    freeze_vision: bool = True
    # None: on (1.0) for the embedded tiny LLaVA trained on single items, off for a checkpoint, another
    # family or merged conversations (`RunConfig.training`). The tiny model's language model starts
    # from random weights and does not learn to bind "the red star" to the red star's patches without
    # it (README, "Headline").
    ground_attention: float | None = Field(None, ge=0)
    original_fraction: float = Field(0.25, ge=0, le=1)  # share of the original data replayed in each round
    incremental: str = "all"  # "all": every round's data so far; "latest": this round's only
    # "single": each item a one-turn conversation (question -> `target`); "merged": the round's
    # training mix merged per image into multi-round conversations (`merge` section), each turn with
    # its format instruction, the loss on every answer (after arXiv 2401.08968)
    conversation: Literal["single", "merged"] = "single"


class MergeConfig(Section):
    """How items become multi-round conversations (`dialog.merge`; `dataengine merge`, `train.conversation: merged`)."""
    # turns a conversation at most; an image with more items gets several. A follow-up chain (4 turns)
    # is never cut: with a smaller max_turns it makes a conversation of its own.
    max_turns: int = Field(8, ge=1)
    # an item with options: answered by its letter, by its short answer, or one of the two per item
    form: Literal["letter", "word", "mixed"] = "mixed"
    # turns the pool's annotations add for the images merged: caption, region, grounding, existence,
    # followup (a chain whose later turns refer back to the first: dialog.merge.pool_turns)
    pool: list[Literal["caption", "region", "grounding", "existence", "followup"]] = []
    # which turn opens a conversation: "any" (shuffled) or "item" (an item while the image has one, the
    # rest shuffled; a question-first template shows only the opening question before the image, see
    # dialog.merge.LEADS)
    lead: Literal["any", "item"] = "any"


class HADPOConfig(Section):
    """The hallucination round (HA-DPO, arXiv 2311.16839): the model describes pool images, the
    hallucinated sentences are found and corrected against the annotation, and (corrected, original)
    pairs train it by DPO; POPE and SHR on held-out images measure it before and after."""
    after_rounds: bool = False  # the loop adds a hallucination round after its SFT rounds
    images: int = Field(1500, ge=1)  # pool images described for pairs
    eval_images: int = Field(200, ge=1)  # held-out images for POPE and SHR
    # Annotations of held-out images (POPE uses COCO val2014) and where their pictures are (default:
    # data.image_root). None: the embedded world renders unseen scenes; a real pool gives up
    # `eval_images` of its images that no original training item uses.
    eval_pool: str | None = None
    eval_image_root: str | None = None
    # POPE's objects asked per image, present and absent alike (POPE: 3 of COCO's 80 categories; with
    # the synthetic world's 6 shapes, 1 keeps the splits apart: at 3 they would ask the same objects).
    pope_per_image: int = Field(3, ge=1)
    prompt: str | None = None  # None: the tiny model's region-description request, else "Describe this image in detail."
    max_new_tokens: int = Field(80, ge=8)
    detector: Literal["grounded", "llm"] = "grounded"  # "llm": the `llm` section's server detects and corrects
    style: Literal["plain", "llm"] = "plain"  # the style rewrite both sides of a pair pass
    # "description": HA-DPO's pairs (corrected description, original); "existence": beside them,
    # claim-level pairs in POPE's question form from the objects each description named;
    # "conditional": for each of those, mDPO's image-conditioned pair (the chosen side with its own
    # picture over with a described image on which it is false).
    pairs: list[Literal["description", "existence", "conditional"]] = ["description"]
    # Whether an object name the annotation does not list counts as absent (true for the synthetic
    # world and COCO's categories; set false for sparse annotations such as Visual Genome's).
    exhaustive: bool = True
    # The on-policy check before DPO (generate.pairs.check_on_policy, after arXiv 2501.09695): a pair
    # whose chosen side is less likely per token, under the model trained, than its rejected side by
    # more than `off_policy_gap` nats is off-policy; "keep" trains on it (the check is recorded),
    # "drop" leaves it out.
    off_policy: Literal["keep", "drop"] = "keep"
    off_policy_gap: float = Field(1.0, gt=0)
    train: DPOTrainConfig = DPOTrainConfig()

    @field_validator("pairs")
    @classmethod
    def pairs_to_condition(cls, v: list[str]) -> list[str]:
        if "conditional" in v and not {"description", "existence"} & set(v):
            raise ValueError("conditional pairs are made from description or existence pairs: add one of them")
        return v


class EvolveConfig(Section):
    """Instruction evolution (MMEvol, arXiv 2409.05840) of each round's kept items before training:
    `rounds` rounds of operators and elimination (`evolve.rounds.evolve`), then a `share` of the
    round's items is replaced by evolved descendants of theirs (the same number of items in all)."""
    rounds: int = Field(0, ge=0)  # 0: no evolution
    share: float = Field(0.25, ge=0, le=1)  # bench/evolve.py: 25% took nearly all of the hard benchmark's gain, no loss
    operators: list[str] = ["perception", "reasoning", "interaction"]
    generator: Literal["grounded", "llm"] = "grounded"  # "llm": the llm section's server evolves
    judge: Literal["grounded", "llm"] = "grounded"
    prompt: str = "evolve-v1"  # the prompt file of the LLM operators and judge (llm/prompts/<name>.yaml)
    prompts: str | None = None  # a prompt store from `dataengine ipo --evolve` (its best version's rules are used)

    @field_validator("operators")
    @classmethod
    def known_operators(cls, v: list[str]) -> list[str]:
        from .evolve.operators import OPERATORS
        return [OPERATORS.check(o) for o in v]


class RunConfig(Section):
    seed: int = Field(0, ge=0)
    rounds: int = Field(3, ge=0)
    world: WorldConfig = WorldConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    evaluate: EvalConfig = EvalConfig()
    sample: SampleConfig = SampleConfig()
    generate: GenerateConfig = GenerateConfig()
    llm: LLMConfig = LLMConfig()
    ipo: IPOConfig = IPOConfig()
    embed: EmbedConfig = EmbedConfig()
    filter: FilterConfig = FilterConfig()
    train: RoundTrainConfig = RoundTrainConfig()
    hadpo: HADPOConfig = HADPOConfig()
    evolve: EvolveConfig = EvolveConfig()
    merge: MergeConfig = MergeConfig()

    def training(self, **update) -> RoundTrainConfig:
        """The `train` section as a training uses it, with `update` applied: `ground_attention` unset
        means 1.0 for the embedded tiny LLaVA (`model.path` unset, `model.tiny.family` llava: grounding
        needs one image token per patch) on single items, else 0."""
        t = self.train
        if t.ground_attention is None:
            tiny_llava = self.model.path is None and self.model.tiny.family == "llava"
            update = {"ground_attention": 1.0 if tiny_llava and t.conversation == "single" else 0.0} | update
        return t.model_copy(update=update)


def load_config(path: str | Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(read_text(path)) or {}
        return RunConfig.model_validate(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise DataError(f"{path}: {where}not valid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        raise DataError(f"{path}: {problem(e)}") from None


def problem(e: ValidationError) -> str:
    """A config's first problem in one line: where, and what (an unknown key with the closest valid one)."""
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + closest(str(err["loc"][-1]), _keys(err["loc"][:-1]))
    where = ".".join(str(x) for x in err["loc"])
    return f"{where}: {msg}" if where else msg


def _keys(loc: tuple) -> list[str]:
    """The valid keys of the config section at `loc`."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = field.annotation if field else None
        sub = next((a for a in getattr(sub, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)), sub)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return list(model.model_fields)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
