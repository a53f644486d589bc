"""The dataset's self-description: ``manifest.json`` and the per-input ledger ``files.jsonl``.

Both are pure functions of what the pipeline gathered: the matched inputs, the files that decoded,
per-file example counts, the dead letters, per-split statistics and the written shards. The
layout keys (``sample_rate``, ``frame_rate``, ``example_secs``, ``features``) are the contract
:mod:`ddsp_core.records` reads back.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Optional, Sequence

from ddsp_core import records
from pipelines import stats
from pipelines.inputs import DIRECTORY, InputEntry
from pipelines.options import PrepareOptions
from pipelines.splitting import SEGMENT, SEGMENTED

#: What the ledger says about the split of a file split by segment.
SEGMENT_FIELDS = ('eval_blocks', 'eval_seconds', 'guard_seconds', 'guard_windows')

GENERATOR = 'pipelines.prepare_dataset'
#: Ledger outcomes.
WRITTEN, PARTIAL, DEAD, SKIPPED = 'written', 'partially_written', 'dead_lettered', 'skipped'


def build_ledger(entries: Sequence[InputEntry], file_records: Iterable[Mapping],
                 counts: Mapping[str, tuple[int, int]], dead_letters: Iterable[Mapping],
                 opts: PrepareOptions) -> list[dict]:
    """One ledger line per matched entry, sorted by path.

    Args:
        entries: everything the input patterns matched (:func:`pipelines.inputs.expand_inputs`).
        file_records: one per file that decoded: ``path``, ``split``, ``seconds``, ``sha256``
            (and for a file split by segment ``eval_blocks``, ``eval_seconds``,
            ``guard_seconds``, ``guard_windows``: :func:`pipelines.splitting.describe`).
        counts: path -> (examples written, windows dropped as silent[, eval examples]).
        dead_letters: dead-letter records (``path``, ``stage``, ``error``, ``reason``).
        opts: options (for example seconds and the eval fraction).

    Returns:
        dicts with ``path``, ``key``, ``split``, ``outcome`` (``written``, ``partially_written``,
        ``dead_lettered`` or ``skipped``), ``examples``, ``example_seconds``,
        ``source_seconds``, ``windows_dropped_silent``, ``sha256`` and ``reasons`` (the dead
        letters' or the skip's reasons, possibly empty); a file split by segment (``split``
        ``segmented``) also has ``eval_examples``, ``eval_blocks`` (``[start, end]`` seconds of
        held-out audio), ``eval_seconds``, ``guard_seconds`` and ``guard_windows``.
    """
    from pipelines.inputs import assign_split

    decoded = {r['path']: r for r in file_records}
    letters: dict[str, list[Mapping]] = defaultdict(list)
    for d in dead_letters:
        letters[d['path']].append(d)
    out = []
    for entry in sorted(entries):
        examples, dropped, *rest = counts.get(entry.path, (0, 0))
        rec = decoded.get(entry.path, {})
        line = {
            'path': entry.path, 'key': entry.key,
            'split': rec.get('split') or (None if entry.kind == DIRECTORY else
                                          assign_split(entry.key, opts.eval_fraction)),
            'examples': int(examples),
            'example_seconds': int(examples) * opts.example_secs,
            'source_seconds': rec.get('seconds'),
            'windows_dropped_silent': int(dropped),
            'sha256': rec.get('sha256'),
        }
        if rec.get('split') == SEGMENTED:
            line['eval_examples'] = int(rest[0]) if rest else 0
            line.update({k: rec[k] for k in SEGMENT_FIELDS})
        if entry.kind == DIRECTORY:
            line.update(outcome=SKIPPED, split=None, reasons=['skipped: directory'])
        else:
            reasons = [f'{d["stage"]}: {d["reason"]}' for d in letters.get(entry.path, [])]
            if examples and reasons:
                outcome = PARTIAL
            elif examples:
                outcome = WRITTEN
            elif reasons:
                outcome = DEAD
            else:  # cannot happen when the pipeline is sound; reported rather than hidden
                outcome, reasons = DEAD, ['no examples and no dead letter (internal error)']
            line.update(outcome=outcome, reasons=reasons)
        out.append(line)
    return out


def _split_shares(line: Mapping) -> dict[str, tuple[int, float]]:
    """split -> (1 if the file has examples in it, its source seconds there) of a written
    ledger line: a segmented file counts in both splits, with its held-out seconds in eval and
    the rest but the guard in train."""
    secs = line['source_seconds'] or 0.0
    if line['split'] != SEGMENTED:
        return {line['split']: (1, secs)}
    n_eval = line['eval_examples']
    return {'eval': (int(n_eval > 0), line['eval_seconds']),
            'train': (int(line['examples'] > n_eval),
                      max(0.0, secs - line['eval_seconds'] - line['guard_seconds']))}


def split_summary(opts: PrepareOptions, method: str, ledger: Sequence[Mapping]) -> dict:
    """The manifest's ``split`` entry: how the eval split was drawn (``method``, ``split_by``
    as asked, ``seed``, ``eval_fraction``), the ``held_out_seconds`` of audio in eval, the guard
    (``guard_secs``: one example window each side of a held-out block; ``guard_seconds`` of
    audio and ``guard_windows`` that neither split uses) and ``files_segmented``."""
    written = [line for line in ledger if line['outcome'] in (WRITTEN, PARTIAL)]
    held_out = sum(_split_shares(line).get('eval', (0, 0.0))[1] for line in written)
    segmented = [line for line in written if line['split'] == SEGMENTED]
    return {
        'method': method, 'split_by': opts.split_by, 'seed': opts.split_seed,
        'eval_fraction': opts.eval_fraction,
        'held_out_seconds': round(held_out, 6),
        'guard_secs': opts.example_secs if method == SEGMENT else 0.0,
        'guard_seconds': round(sum(line['guard_seconds'] for line in segmented), 6),
        'guard_windows': sum(line['guard_windows'] for line in segmented),
        'files_segmented': len(segmented),
    }


def f0_block(opts: PrepareOptions, crepe_frames: Optional[Mapping[str, int]] = None) -> dict:
    """How f0 was tracked: CREPE's size, number format, decoding and analysis hop (None: every
    frame).

    ``--crepe_precision auto`` is resolved by each worker process where CREPE runs (its CPU's
    bfloat16 flags, its GPU), so ``precision`` is what the workers resolved: 'bfloat16' or
    'float32' when they all agreed, 'mixed' when they did not, and ``frames_by_precision`` how
    many CREPE frames each format analysed (deterministic for a given fleet: the same bytes from
    every runner on the same hardware). Without ``crepe_frames`` (no frame analysed), the option.
    """
    frames = {str(k): int(v) for k, v in sorted((crepe_frames or {}).items()) if v}
    precision = (next(iter(frames)) if len(frames) == 1 else 'mixed' if frames
                 else opts.crepe_precision)
    return {'capacity': opts.crepe_capacity, 'precision': precision,
            'frames_by_precision': frames, 'viterbi': opts.viterbi, 'hop_ms': opts.f0_hop_ms}


def build_manifest(opts: PrepareOptions, inputs: Sequence[str], ledger: Sequence[Mapping],
                   split_stats: Mapping[str, dict], shards: Mapping[str, Sequence[str]],
                   n_dead_letters: int, split_method: str | None = None,
                   shard_files: Optional[Mapping[str, Mapping]] = None,
                   crepe_frames: Optional[Mapping[str, int]] = None) -> dict:
    """Assemble ``manifest.json``.

    Args:
        opts: options of the run.
        inputs: the input patterns.
        ledger: from :func:`build_ledger`.
        split_stats: per-split accumulators (:func:`pipelines.stats.merge_split_stats`).
        shards: split -> written shard paths or names.
        n_dead_letters: number of dead-letter records.
        crepe_frames: CREPE frames analysed per number format, as each worker resolved
            ``--crepe_precision`` (:func:`f0_block`).
        split_method: the method that drew the eval split (``file`` or ``segment``;
            :func:`pipelines.splitting.choose_method`); default ``opts.split_by``.
        shard_files: shard file name -> ``{'bytes', 'sha256'}`` as written; recorded per split
            under :data:`ddsp_core.records.SHARD_FILES` (readers check sizes before reading,
            ``ddsp-prepare --verify`` the digests).
    """
    layout = opts.layout
    outcomes = defaultdict(int)
    files_by_split = {s: 0 for s in records.SPLITS}
    secs_by_split = {s: 0.0 for s in records.SPLITS}
    for line in ledger:
        outcomes[line['outcome']] += 1
        if line['outcome'] in (WRITTEN, PARTIAL):
            for split, (n, secs) in _split_shares(line).items():
                files_by_split[split] += n
                secs_by_split[split] += secs
    n_files = len(ledger) - outcomes[SKIPPED]
    splits = {}
    for s in records.SPLITS:
        entry = stats.summarize_split(split_stats.get(s, stats.empty_split_stats()),
                                      opts.example_secs)
        entry.update({'files': files_by_split[s], 'source_hours': secs_by_split[s] / 3600.0,
                      'shards': sorted(str(p).replace('\\', '/').rsplit('/', 1)[-1]
                                       for p in shards.get(s, []))})
        splits[s] = entry
        if shard_files is not None:
            entry[records.SHARD_FILES] = {n: dict(shard_files[n]) for n in entry['shards']
                                          if n in shard_files}
    digests = {s: split_stats.get(s, stats.empty_split_stats())['digest']
               for s in records.SPLITS}
    train = splits['train']
    dropped = sum(line['windows_dropped_silent'] for line in ledger)
    n_examples = sum(splits[s]['examples'] for s in records.SPLITS)
    files_ok = n_files == outcomes[WRITTEN] + outcomes[PARTIAL] + outcomes[DEAD]
    examples_ok = n_examples == sum(line['examples'] for line in ledger)
    return {
        **records.layout_fields(layout),
        'generator': GENERATOR,
        'fingerprint': records.fingerprint(layout, digests),
        'options': opts.to_dict(),
        'f0': f0_block(opts, crepe_frames),
        'inputs': list(inputs),
        'files': {
            'matched': len(ledger),
            'in': n_files,
            'skipped_directories': outcomes[SKIPPED],
            'written': outcomes[WRITTEN],
            'partially_written': outcomes[PARTIAL],
            'dead_lettered': outcomes[DEAD],
            # every file has one outcome, and the ledger's examples are the shards' examples
            'reconciled': files_ok and examples_ok,
            'ledger': records.LEDGER,
        },
        'examples': n_examples,
        'hours': sum(splits[s]['hours'] for s in records.SPLITS),
        'source_hours': sum(secs_by_split.values()) / 3600.0,
        'windows_dropped_silent': dropped,
        'dead_letters': n_dead_letters,
        'splits': splits,
        'split': split_summary(opts, split_method or opts.split_by, ledger),
        'mean_loudness_db': train['loudness_db']['mean'],
        'std_loudness_db': train['loudness_db']['std'],
        # robust f0 range (1st..99th percentile of voiced train frames, 20-cent resolution)
        'f0_range_hz': [train['f0_hz']['p01'], train['f0_hz']['p99']],
    }
