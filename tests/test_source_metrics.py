"""Per-source loss against a hand computation on fixed batches, unpacked and packed."""

from __future__ import annotations

import math

import pytest
import torch

from axolotl_tell.source_metrics import SOURCE_IDS, SourceIdsCollator, SourceLossMeter

KINDS = {0: "general", 1: "task", 2: "general"}


def _rows(tokenizer):
    texts = ["the cat sat on a big red house", "why did the dog run", "a small bird flew over the river and the tree"]
    rows = []
    for i, (text, source) in enumerate(zip(texts, [0, 1, 2])):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        labels = [-100] * 2 + ids[2:]  # a masked prompt of 2 tokens
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "tell_source": source,
                     "position_ids": list(range(len(ids)))})
    return rows


def _hand(logits, labels, owners):
    """Token-weighted CE per kind by an explicit loop: label at t+1 belongs to owners[t+1]."""
    sums = {"task": [0.0, 0], "general": [0.0, 0]}
    logp = torch.log_softmax(logits.float(), dim=-1)
    for t in range(labels.shape[0] - 1):
        target = int(labels[t + 1])
        if target == -100 or owners[t + 1] < 0:
            continue
        kind = KINDS[owners[t + 1]]
        sums[kind][0] -= float(logp[t, target])
        sums[kind][1] += 1
    return sums


def _padded_batch(tokenizer, num_items):
    """The three rows as Axolotl's collator pads them (unpacked), their source ids, and the loss kwargs."""
    from axolotl.utils.collators import DataCollatorForSeq2Seq

    rows = _rows(tokenizer)
    for r in rows:
        r.pop("position_ids")
    batch = SourceIdsCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, return_tensors="pt"))(rows)
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    return batch, batch.pop(SOURCE_IDS), kwargs


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def test_unpacked_batch_matches_hand_computation(model_and_tokenizer):
    from axolotl.utils.collators import DataCollatorForSeq2Seq

    model, tok = model_and_tokenizer
    rows = _rows(tok)
    for r in rows:
        r.pop("position_ids")
    collator = SourceIdsCollator(DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt"))
    batch = collator([dict(r) for r in rows])
    source_ids = batch.pop(SOURCE_IDS)
    assert "tell_source" not in batch
    for i, r in enumerate(rows):  # one id per real token, -1 on padding
        assert source_ids[i, : len(r["input_ids"])].tolist() == [r["tell_source"]] * len(r["input_ids"])
        assert (source_ids[i, len(r["input_ids"]):] == -1).all()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    meter = SourceLossMeter(KINDS)
    meter.update(logits, batch["labels"], source_ids, "train")
    got = meter.pop("train")
    want = {"task": [0.0, 0], "general": [0.0, 0]}
    for i in range(len(rows)):
        part = _hand(logits[i], batch["labels"][i], source_ids[i].tolist())
        for kind in want:
            want[kind][0] += part[kind][0]
            want[kind][1] += part[kind][1]
    for kind in ("task", "general"):
        assert got[f"tell/{kind}_tokens"] == want[kind][1] > 0
        assert math.isclose(got[f"tell/{kind}_loss"], want[kind][0] / want[kind][1], rel_tol=1e-5)
    assert meter.pop("train") == {"tell/task_tokens": 0, "tell/general_tokens": 0}  # reset after a pop


def test_packed_batch_attributes_tokens_to_their_rows(model_and_tokenizer):
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq

    model, tok = model_and_tokenizer
    rows = _rows(tok)
    collator = SourceIdsCollator(V2BatchSamplerDataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt"))
    packs = [[dict(rows[0]), dict(rows[1])], [dict(rows[2])]]
    batch = collator(packs)
    source_ids = batch.pop(SOURCE_IDS)
    owners0 = [0] * len(rows[0]["input_ids"]) + [1] * len(rows[1]["input_ids"])
    assert source_ids[0, : len(owners0)].tolist() == owners0
    assert source_ids[1, : len(rows[2]["input_ids"])].tolist() == [2] * len(rows[2]["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    meter = SourceLossMeter(KINDS)
    meter.update(logits, batch["labels"], source_ids, "train")
    got = meter.pop("train")
    p0 = _hand(logits[0], batch["labels"][0], source_ids[0].tolist())
    p1 = _hand(logits[1], batch["labels"][1], source_ids[1].tolist())
    task_loss = (p0["task"][0] + p1["task"][0]) / (p0["task"][1] + p1["task"][1])
    general_loss = (p0["general"][0] + p1["general"][0]) / (p0["general"][1] + p1["general"][1])
    # the task row's own supervised tokens: len - 2 masked - its first token is predicted across the boundary
    assert got["tell/task_tokens"] == len(rows[1]["input_ids"]) - 2
    assert math.isclose(got["tell/task_loss"], task_loss, rel_tol=1e-5)
    assert math.isclose(got["tell/general_loss"], general_loss, rel_tol=1e-5)


def test_train_and_eval_sums_are_kept_apart():
    meter = SourceLossMeter({0: "general", 1: "task"})
    logits = torch.zeros(1, 3, 5)
    labels = torch.tensor([[-100, 2, 3]])
    meter.update(logits, labels, torch.tensor([[1, 1, 1]]), "eval")
    assert meter.pop("train") == {}  # nothing measured on train: nothing logged (not zeros that look measured)
    got = meter.pop("eval")
    assert got["tell/task_tokens"] == 2 and math.isclose(got["tell/task_loss"], math.log(5), rel_tol=1e-6)


@pytest.mark.parametrize("num_items", [None, 7])
def test_source_aware_loss_equals_the_default_loss_and_counts_sources(model_and_tokenizer, num_items):
    """One CE for both: the training loss and its gradient match transformers' default; sums match by hand."""
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import install_source_loss

    batch, source_ids, kwargs = _padded_batch(model_and_tokenizer[1], num_items)
    path = model_and_tokenizer[0].name_or_path
    reference, patched = AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    meter = SourceLossMeter(KINDS)
    source_loss = install_source_loss(patched, meter)
    assert source_loss is not None
    want = reference(**batch, **kwargs)
    want.loss.backward()
    with source_loss.batch_sources(source_ids, "train") as handoff:
        got = patched(**batch, **kwargs)
    got.loss.backward()
    assert handoff.consumed and source_loss.pending is None  # consumed by the forward, the hand-off closed
    assert torch.allclose(got.loss, want.loss, rtol=1e-6, atol=1e-7)
    for (name, p_ref), (_, p_new) in zip(reference.named_parameters(), patched.named_parameters()):
        assert torch.allclose(p_ref.grad, p_new.grad, rtol=1e-5, atol=1e-7), name
    sums = meter.pop("train")
    by_hand = SourceLossMeter(KINDS)
    by_hand.update(want.logits.detach(), batch["labels"], source_ids, "train")
    expected = by_hand.pop("train")
    for key, value in expected.items():
        assert math.isclose(sums[key], value, rel_tol=1e-5), key
    # with nothing pending (e.g. a batch without sources) the default loss runs unchanged
    again = patched(**batch, **kwargs)
    assert torch.allclose(again.loss, want.loss, rtol=1e-6, atol=1e-7)
    assert meter.pop("train")["tell/task_tokens"] == 0


# --- GPU-path defects found by reading Axolotl/transformers/accelerate (issue 10), shown on CPU ---


def test_batch_flattening_collator_gets_one_row_of_source_ids(model_and_tokenizer):
    """`batch_flattening`: transformers' flattening collator returns one [1, T] row for the whole micro-batch."""
    from transformers import DataCollatorWithFlattening

    _, tok = model_and_tokenizer
    rows = _rows(tok)
    for r in rows:
        r.pop("position_ids"), r.pop("attention_mask")
    batch = SourceIdsCollator(DataCollatorWithFlattening(return_tensors="pt"))([dict(r) for r in rows])
    assert batch["input_ids"].shape[0] == 1
    want = [r["tell_source"] for r in rows for _ in r["input_ids"]]
    assert batch[SOURCE_IDS].tolist() == [want]


def test_collator_wrapper_survives_pickling():
    """Spawn/forkserver dataloader workers unpickle the collator: `__getattr__` must not recurse."""
    import copy
    import pickle

    from transformers import DataCollatorWithFlattening

    wrapped = SourceIdsCollator(DataCollatorWithFlattening(return_tensors="pt"), split="eval")
    again = pickle.loads(pickle.dumps(wrapped))
    assert again.split == "eval" and isinstance(again.inner, DataCollatorWithFlattening)
    assert copy.deepcopy(wrapped).split == "eval"


class _FakeTrainer:
    """The trainer surface `attach` wraps; `compute_loss` pops `labels` as a compute_loss_func / label smoother does."""

    def __init__(self, model, logs):
        from types import SimpleNamespace

        self.model, self.logs = model, logs
        self.data_collator = lambda features: features
        self.args = SimpleNamespace(world_size=1, process_index=0, per_device_eval_batch_size=1)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        out = model(input_ids=inputs["input_ids"])
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                 ignore_index=-100)
        return (loss, out) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        self.logs.append(dict(logs))

    def evaluate(self, *args, **kwargs):
        return {}


def test_per_source_loss_reads_labels_before_a_loss_function_pops_them(model_and_tokenizer):
    from axolotl_tell.source_metrics import attach

    model, _ = model_and_tokenizer
    logs = []
    trainer = _FakeTrainer(model, logs)
    meter = SourceLossMeter(KINDS)
    attach(trainer, meter, keep_model_loss=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    inputs = {"input_ids": ids, "labels": torch.tensor([[-100, 6, 7, 8]]), SOURCE_IDS: torch.tensor([[1, 1, 1, 1]])}
    model.train()
    try:
        trainer.compute_loss(model, inputs)
    finally:
        model.eval()
    trainer.log({"loss": 1.0})
    assert logs[-1]["tell/task_tokens"] == 3 and "tell/task_loss" in logs[-1]


def test_only_the_trainers_own_loss_logs_carry_per_source_metrics(model_and_tokenizer):
    """Bench eval and causal-LM eval log from rank 0 alone: all-reducing there would deadlock the other ranks."""
    from axolotl_tell.source_metrics import attach

    model, _ = model_and_tokenizer
    logs = []
    trainer = _FakeTrainer(model, logs)
    meter = SourceLossMeter(KINDS)
    attach(trainer, meter, keep_model_loss=True)
    pops = []
    meter.pop = lambda split, replicas=1: pops.append(split) or {}
    trainer.log({"eval_bench_loss": 0.5, "eval_bench_accuracy_mmlu": 0.3})  # do_bench_eval's log
    trainer.log({"eval_sacrebleu": 12.0})  # do_causal_lm_eval's log
    assert pops == []
    trainer.log({"eval_loss": 1.0})
    trainer.log({"loss": 1.0, "learning_rate": 1e-4})
    assert pops == ["eval", "train"]


@pytest.mark.parametrize("n_rows,world,batch", [(3, 2, 1), (5, 2, 2), (7, 3, 2), (8, 2, 2), (1, 2, 4), (10, 4, 3)])
def test_refilled_eval_rows_are_exactly_accelerates_even_batches_copies(n_rows, world, batch):
    """accelerate's own sharding with even_batches: the rows `compat.even_batches_refilled_rows` masks are exactly
    the repeated ones."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from axolotl_tell.compat import even_batches_refilled_rows as refill_rows

    kept = []
    for rank in range(world):
        shard = BatchSamplerShard(BatchSampler(SequentialSampler(range(n_rows)), batch, False),
                                  num_processes=world, process_index=rank, even_batches=True)
        for k, indices in enumerate(shard):
            copies = set(refill_rows(k, len(indices), n_rows, world, rank, batch))
            kept += [index for j, index in enumerate(indices) if j not in copies]
    assert sorted(kept) == list(range(n_rows))  # every row once, no copy counted


def test_axolotls_chunked_cross_entropy_is_kept(model_and_tokenizer):
    """`chunked_cross_entropy` rebinds transformers' ForCausalLMLoss; the per-source loss must not replace it."""
    import transformers.loss.loss_utils as loss_utils
    from axolotl.monkeypatch.loss.chunked import patch_chunked_ce_loss_fn
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import install_source_loss

    saved = (loss_utils.ForCausalLMLoss, loss_utils.LOSS_MAPPING["ForCausalLM"])
    try:
        patch_chunked_ce_loss_fn()
        model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
        chunked = model.loss_function
        assert chunked.__name__ != "ForCausalLMLoss"
        assert install_source_loss(model, SourceLossMeter(KINDS)) is None
        assert model.loss_function is chunked
    finally:
        loss_utils.ForCausalLMLoss, loss_utils.LOSS_MAPPING["ForCausalLM"] = saved


def test_logits_fallback_scores_in_bounded_chunks(model_and_tokenizer):
    """The fallback's float32 copy is SCORE_CHUNK_ROWS rows at a time, with the same sums as one pass."""
    torch.manual_seed(0)
    logits = torch.randn(2, 9, 11, dtype=torch.bfloat16)
    labels = torch.randint(0, 11, (2, 9))
    labels[0, :3] = -100
    sources = torch.tensor([[1] * 9, [0] * 5 + [2] * 4])
    whole, chunked = SourceLossMeter(KINDS), SourceLossMeter(KINDS)
    whole.SCORE_CHUNK_ROWS = 10_000
    chunked.SCORE_CHUNK_ROWS = 3
    whole.update(logits, labels, sources, "train")
    chunked.update(logits, labels, sources, "train")
    a, b = whole.pop("train"), chunked.pop("train")
    assert a.keys() == b.keys() and a["tell/task_tokens"] == 6 and a["tell/general_tokens"] == 8
    for key in a:
        assert math.isclose(a[key], b[key], rel_tol=1e-6), key


# --- tell_task_loss_weight (issue 13's lever) ---


def _hand_batch(model, batch, source_ids):
    """(CE sum, tokens) of the task and of the general tokens over the whole batch, by :func:`_hand`."""
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    task, general = (0.0, 0), (0.0, 0)
    for row in range(logits.shape[0]):
        sums = _hand(logits[row], batch["labels"][row], source_ids[row].tolist())
        task = (task[0] + sums["task"][0], task[1] + sums["task"][1])
        general = (general[0] + sums["general"][0], general[1] + sums["general"][1])
    return task, general


@pytest.mark.parametrize("num_items", [None, 7])
def test_task_loss_weight_multiplies_task_tokens_in_training_only(model_and_tokenizer, num_items):
    """loss = (w * sum task token CE + sum general token CE) / denominator, checked against a hand sum; eval and
    the logged per-source losses stay unweighted."""
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import install_source_loss

    batch, source_ids, kwargs = _padded_batch(model_and_tokenizer[1], num_items)
    model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
    meter = SourceLossMeter(KINDS)
    source_loss = install_source_loss(model, meter, task_weight=4.0)
    task, general = _hand_batch(model, batch, source_ids)
    assert task[1] and general[1]
    denominator = num_items if num_items is not None else task[1] + general[1]
    with source_loss.batch_sources(source_ids, "train"):
        got = model(**batch, **kwargs).loss
    assert math.isclose(float(got), (4.0 * task[0] + general[0]) / denominator, rel_tol=1e-5)
    logged = meter.pop("train")  # the logged task loss is the plain mean, not the weighted one
    assert math.isclose(logged["tell/task_loss"], task[0] / task[1], rel_tol=1e-5)
    with source_loss.batch_sources(source_ids, "eval"):
        assert math.isclose(float(model(**batch, **kwargs).loss), (task[0] + general[0]) / denominator, rel_tol=1e-5)


def test_a_handoff_is_consumed_once_and_never_left_open(model_and_tokenizer):
    """The source ids reach one forward's loss; a second forward inside the same hand-off gets the stock loss, and
    a hand-off opened while another is open is a bug (two micro-batches' sums would mix)."""
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import install_source_loss

    batch, source_ids, kwargs = _padded_batch(model_and_tokenizer[1], None)
    model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
    meter = SourceLossMeter(KINDS)
    source_loss = install_source_loss(model, meter, task_weight=4.0)
    stock = float(AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)(**batch, **kwargs).loss)
    with source_loss.batch_sources(source_ids, "train") as handoff:
        weighted = float(model(**batch, **kwargs).loss)
        again = float(model(**batch, **kwargs).loss)
        with pytest.raises(RuntimeError, match="handed over twice"):
            with source_loss.batch_sources(source_ids, "train"):
                pass
    assert handoff.consumed and source_loss.pending is None
    assert weighted != pytest.approx(stock) and again == pytest.approx(stock, rel=1e-6)


@pytest.mark.parametrize("num_items", [None, 7])
def test_task_loss_share_gives_the_task_a_fixed_share_of_the_training_loss(model_and_tokenizer, num_items):
    """loss = N / denominator * (share * mean task CE + (1 - share) * mean general CE), N the micro-batch's
    supervised tokens: against a hand sum. Eval and the logged per-source losses stay plain."""
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import install_source_loss

    batch, source_ids, kwargs = _padded_batch(model_and_tokenizer[1], num_items)
    model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
    meter = SourceLossMeter(KINDS)
    source_loss = install_source_loss(model, meter, task_share=0.8)
    task, general = _hand_batch(model, batch, source_ids)
    assert task[1] and general[1] and task[1] != general[1]  # unequal counts: a plain mean would not pass
    n = task[1] + general[1]
    denominator = num_items if num_items is not None else n
    want = n / denominator * (0.8 * task[0] / task[1] + 0.2 * general[0] / general[1])
    with source_loss.batch_sources(source_ids, "train"):
        assert math.isclose(float(model(**batch, **kwargs).loss), want, rel_tol=1e-5)
    logged = meter.pop("train")
    assert math.isclose(logged["tell/task_loss"], task[0] / task[1], rel_tol=1e-5)
    with source_loss.batch_sources(source_ids, "eval"):
        assert math.isclose(float(model(**batch, **kwargs).loss), (task[0] + general[0]) / denominator, rel_tol=1e-5)


def test_task_loss_share_leaves_a_one_source_micro_batch_plain():
    """No task token (or no general one): the share cannot hold, so every token weighs 1, never a division by 0."""
    meter = SourceLossMeter(KINDS)
    general_only = torch.tensor([[0, 2, 0, -1]])  # KINDS: 1 is the task, 0 and 2 general
    supervised = torch.tensor([[True, True, False, False]])
    assert meter.share_weights(general_only, supervised, 0.75).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    mixed = torch.tensor([[1, 0, 2, 0, -1]])
    supervised = torch.tensor([[True, True, True, False, True]])  # the unsupervised general token is not counted
    weights = meter.share_weights(mixed, supervised, 0.75)[0].tolist()
    assert weights[0] == pytest.approx(0.75 * 3 / 1) and weights[1] == pytest.approx(0.25 * 3 / 2)
    assert weights[4] == 1.0


def test_task_loss_weight_without_the_stock_loss_is_an_error(model_and_tokenizer):
    from types import SimpleNamespace

    from axolotl_tell.source_metrics import TellTrainingError, attach

    model, tok = model_and_tokenizer

    class Trainer(SimpleNamespace):
        def compute_loss(self, *a, **k):
            raise AssertionError

        def log(self, *a, **k):
            pass

        def evaluate(self, *a, **k):
            pass

    trainer = Trainer(model=model, data_collator=lambda f: f, args=SimpleNamespace(world_size=1))
    with pytest.raises(TellTrainingError, match="tell_task_loss_weight"):
        attach(trainer, SourceLossMeter(KINDS), keep_model_loss=True, task_loss_weight=2.0)
    with pytest.raises(TellTrainingError, match="tell_task_loss_share: 0.75 needs"):
        attach(trainer, SourceLossMeter(KINDS), keep_model_loss=True, task_loss_share=0.75)


def test_a_warming_up_weight_follows_the_trainers_step_and_is_logged(model_and_tokenizer):
    """With a warm-up the training loss weighs task tokens 1 at step 0, halfway at mid warm-up and the target from
    its end on (against a hand sum), the weight of the last step is logged, and eval stays plain."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import TASK_LOSS_WEIGHT, attach

    batch, source_ids, kwargs = _padded_batch(model_and_tokenizer[1], None)
    model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
    task, general = _hand_batch(model, batch, source_ids)
    logs = []
    trainer = _FakeTrainer(model, logs)
    trainer.compute_loss = lambda model, inputs, return_outputs=False, **kw: (
        (lambda out: (out.loss, out) if return_outputs else out.loss)(model(**inputs, **kwargs)))
    trainer.state = SimpleNamespace(global_step=0, max_steps=8)  # warm-up 0.5: 4 steps
    attach(trainer, SourceLossMeter(KINDS), task_loss_weight=9.0, task_loss_weight_warmup=0.5)
    model.train()
    for step, weight in ((0, 1.0), (2, 5.0), (4, 9.0), (7, 9.0)):
        trainer.state.global_step = step
        got = trainer.compute_loss(model, {**batch, SOURCE_IDS: source_ids})
        assert math.isclose(float(got), (weight * task[0] + general[0]) / (task[1] + general[1]), rel_tol=1e-4), step
    trainer.log({"loss": float(got)})
    assert logs[-1][TASK_LOSS_WEIGHT] == 9.0 and "tell/unweighted_loss" in logs[-1]
    model.eval()
    trainer.state.global_step = 2
    plain = trainer.compute_loss(model, {**batch, SOURCE_IDS: source_ids})
    assert math.isclose(float(plain), (task[0] + general[0]) / (task[1] + general[1]), rel_tol=1e-4)


def test_task_loss_weight_not_applied_by_a_loss_computed_elsewhere_is_an_error(model_and_tokenizer):
    """A `compute_loss_func` (Axolotl's `use_eaft`) takes the labels away, so the model's weighted loss never runs:
    training must stop, not go on unweighted (evaluation, never weighted, goes on)."""
    from transformers import AutoModelForCausalLM

    from axolotl_tell.source_metrics import TellTrainingError, attach

    model = AutoModelForCausalLM.from_pretrained(model_and_tokenizer[0].name_or_path)
    trainer = _FakeTrainer(model, [])
    attach(trainer, SourceLossMeter(KINDS), task_loss_weight=2.0)
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "labels": torch.tensor([[-100, 6, 7, 8]]),
              SOURCE_IDS: torch.tensor([[1, 1, 1, 1]])}
    model.eval()
    trainer.compute_loss(model, dict(inputs))  # eval: fine
    model.train()
    with pytest.raises(TellTrainingError, match="was not applied"):
        trainer.compute_loss(model, dict(inputs))
