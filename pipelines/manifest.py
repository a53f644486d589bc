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

GENERATOR = 'pipelines.prepare_dataset'
#: Ledger outcomes.
WRITTEN, PARTIAL, DEAD, SKIPPED = 'written', 'partially_written', 'dead_lettered', 'skipped'


def build_ledger(entries: Sequence[InputEntry], file_records: Iterable[Mapping],
                 counts: Mapping[str, tuple[int, int]], dead_letters: Iterable[Mapping],
                 opts: PrepareOptions) -> list[dict]:
    """One ledger line per matched entry, sorted by path.

    Args:
        entries: everything the input patterns matched (:func:`pipelines.inputs.expand_inputs`).
        file_records: one per file that decoded: ``path``, ``split``, ``seconds``, ``sha256``.
        counts: path -> (examples written, windows dropped as silent).
        dead_letters: dead-letter records (``path``, ``stage``, ``error``, ``reason``).
        opts: options (for example seconds and the eval fraction).

    Returns:
        dicts with ``path``, ``key``, ``split``, ``outcome`` (``written``, ``partially_written``,
        ``dead_lettered`` or ``skipped``), ``examples``, ``example_seconds``,
        ``source_seconds``, ``windows_dropped_silent``, ``sha256`` and ``reasons`` (the dead
        letters' or the skip's reasons, possibly empty).
    """
    from pipelines.inputs import assign_split

    decoded = {r['path']: r for r in file_records}
    letters: dict[str, list[Mapping]] = defaultdict(list)
    for d in dead_letters:
        letters[d['path']].append(d)
    out = []
    for entry in sorted(entries):
        examples, dropped = counts.get(entry.path, (0, 0))
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


def build_manifest(opts: PrepareOptions, inputs: Sequence[str], ledger: Sequence[Mapping],
                   split_stats: Mapping[str, dict], shards: Mapping[str, Sequence[str]],
                   n_dead_letters: int, shard_files: Optional[Mapping[str, Mapping]] = None
                   ) -> dict:
    """Assemble ``manifest.json``.

    Args:
        opts: options of the run.
        inputs: the input patterns.
        ledger: from :func:`build_ledger`.
        split_stats: per-split accumulators (:func:`pipelines.stats.merge_split_stats`).
        shards: split -> written shard paths or names.
        n_dead_letters: number of dead-letter records.
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
            files_by_split[line['split']] += 1
            secs_by_split[line['split']] += line['source_seconds'] or 0.0
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
        'mean_loudness_db': train['loudness_db']['mean'],
        'std_loudness_db': train['loudness_db']['std'],
        # robust f0 range (1st..99th percentile of voiced train frames, 20-cent resolution)
        'f0_range_hz': [train['f0_hz']['p01'], train['f0_hz']['p99']],
    }
