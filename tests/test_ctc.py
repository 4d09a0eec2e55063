"""The auxiliary CTC target of OMR: each staff's pitches in reading order (data.staff_order),
the model's CTC head over image columns, and warm starts that add the head."""

from __future__ import annotations

import pytest
import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli.codecs.vocab import Vocabulary, default_vocabulary
from umust_cli.data.staff_order import StaffTargets, pitch_names, staff_pitch_sequences
from umust_cli.errors import BadInputError
from umust_cli.model.generate import batch_steps, step_positions, to_steps
from umust_cli.model.translator import CTC_FRAMES, Translator, TranslatorConfig, make_config

# A grand-staff measure as LMX writes it: voice 1 (staff 1) then, after backup, voice 2 in staff 1
# (a half note under the first beat) and voice 5 in staff 2 (a chord, a triplet, a dotted note).
MEASURE = ("measure key:fifths:0 time beats:2 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
           "E5 voice:1 eighth staff:1 D5 eighth C5 quarter "
           "backup half G4 voice:2 half staff:1 "
           "backup half C3 voice:5 quarter staff:2 chord E3 quarter "
           "G3 eighth 3in2 F3 eighth 3in2 E3 eighth 3in2 "
           "measure grace D5 voice:1 eighth staff:1 C5 half backup half C3 voice:5 half dot staff:2").split()


def test_staff_order_reads_each_staff_left_to_right():
    upper, lower = staff_pitch_sequences(MEASURE)
    # G4 (voice 2) sounds with E5 at beat 1: it comes before D5 although LMX writes it after C5
    assert upper == ["E5", "G4", "D5", "C5", "D5", "C5"]
    assert lower == ["C3", "E3", "G3", "F3", "E3", "C3"]
    assert staff_pitch_sequences(MEASURE, staves=1) == [upper]


def test_staff_order_onsets_follow_types_dots_and_tuplets():
    # staff 2 holds a dotted quarter then an eighth; staff 1's triplet eighths fall between them
    tokens = ("measure E5 voice:1 eighth 3in2 staff:1 F5 eighth 3in2 G5 eighth 3in2 A5 quarter "
              "backup half C3 voice:5 quarter dot staff:2 D3 eighth").split()
    upper, lower = staff_pitch_sequences(tokens)
    assert upper == ["E5", "F5", "G5", "A5"] and lower == ["C3", "D3"]
    # interleaving both staves by onset would give E5 C3 F5 G5 D3 A5; checked through the targets
    names = pitch_names()
    assert len(names) == 70 and names[0] == "C0" and "F4" in names and "F#4" not in names


def test_staff_targets_pad_and_map_to_pitch_classes():
    vocab = default_vocabulary()
    local = vocab.names("notation")
    names = {vocab.to_global("notation", [i])[0]: n for i, n in enumerate(local)}
    whole = vocab.wrap("notation", [local.index(t) for t in MEASURE])
    part = vocab.wrap("notation", [local.index(t) for t in MEASURE[:14]])
    ids = torch.tensor([whole, part + [0] * (len(whole) - len(part))])          # [PAD] = 0
    out = StaffTargets(names)(ids)
    classes = pitch_names()
    assert out.shape == (2, 2, 6)
    assert [classes[i] for i in out[0, 0].tolist()] == ["E5", "G4", "D5", "C5", "D5", "C5"]
    assert out[1, 0].tolist() == [classes.index("E5"), classes.index("D5")] + [-1] * 4
    assert out[1, 1].tolist() == [-1] * 6


VOCAB = Vocabulary(notation=tuple(f"n{i}" for i in range(40)), midi=tuple(f"m{i}" for i in range(60)))


def _image_batch(cfg: TranslatorConfig, widths: list[int], height: int = 3):
    gen = torch.Generator().manual_seed(0)
    seqs = []
    for w in widths:
        codes = torch.randint(0, 1024, (w * height, 4), generator=gen) + torch.arange(4) * 1024
        seqs.append(to_steps(VOCAB.wrap("image", codes.reshape(-1).tolist()), "image", cfg))
    steps = batch_steps(seqs)
    return steps, step_positions(steps, "image", height)


def _notation(cfg: TranslatorConfig, n: int):
    steps = batch_steps([to_steps(VOCAB.wrap("notation", list(range(1, 1 + n))), "notation", cfg)] * 2)
    return steps, step_positions(steps, "notation", 1)


def _adds_a_trained_term(model: Translator, batch: tuple, head: torch.nn.Linear, aux: dict) -> None:
    """In training, the ``aux`` loss arguments raise the loss (same dropout draw) and send gradients
    to ``head`` and to the image columns' mixing."""
    src, sp, tgt, tp = batch
    torch.manual_seed(1)
    with_aux = model(src, sp, tgt, tp, "image", "notation", **aux)
    torch.manual_seed(1)
    assert with_aux.item() > model(src, sp, tgt, tp, "image", "notation").item()
    with_aux.backward()
    assert head.weight.grad.abs().sum() > 0 and model.column_mix.weight.grad.abs().sum() > 0


def test_ctc_head_needs_the_column_layout():
    with pytest.raises(BadInputError, match="column layout"):
        make_config("tiny", VOCAB, "grid", ctc_classes=5)


def test_ctc_loss_is_a_training_term_that_the_head_can_fit():
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB, "column", ctc_classes=5)
    model = Translator(cfg)
    src, sp = _image_batch(cfg, [4, 6])
    tgt, tp = _notation(cfg, 5)
    targets = torch.tensor([[[0, 1, 1, 2], [3, -1, -1, -1]], [[4, 3, 2, 1], [0, 0, 2, -1]]])
    model.train()
    plain = model(src, sp, tgt, tp, "image", "notation")
    _adds_a_trained_term(model, (src, sp, tgt, tp), model.ctc, {"ctc": 1.0, "ctc_targets": targets})
    model.eval()
    assert torch.equal(model(src, sp, tgt, tp, "image", "notation"),
                       model(src, sp, tgt, tp, "image", "notation", ctc=1.0, ctc_targets=targets))
    assert plain.shape == ()
    # a lone head over fixed columns learns the targets (4 and 6 columns: 8 and 12 frames)
    memory, mask = (t.detach() for t in model.encode(src, sp, "image", "notation"))
    opt = torch.optim.Adam(model.ctc.parameters(), lr=0.05)
    first = model.ctc_loss(memory, mask, targets).item()
    for _ in range(150):
        opt.zero_grad()
        loss = model.ctc_loss(memory, mask, targets)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first and CTC_FRAMES == 2


def test_warm_start_adds_a_ctc_head_to_a_checkpoint_without_one(tmp_path):
    plain = Translator(make_config("tiny", VOCAB, "column"))
    config = {"kind": "umust-translator", "format": 1, "step": 7, "model": plain.cfg.to_dict()}
    ckpt_io.save_model(tmp_path / "plain", plain.state_dict(), config, VOCAB)
    cfg = make_config("tiny", VOCAB, "column", ctc_classes=5)
    model = Translator(cfg)
    head = model.ctc.weight.detach().clone()

    def same_head(saved: dict) -> dict:
        return dict(TranslatorConfig.from_dict(saved).to_dict(), ctc_classes=cfg.ctc_classes)

    with pytest.raises(Exception, match="missing"):
        ckpt_io.warm_start(model, tmp_path / "plain", "umust-translator", cfg.to_dict(), VOCAB, same_head)
    row = ckpt_io.warm_start(model, tmp_path / "plain", "umust-translator", cfg.to_dict(), VOCAB, same_head,
                             fresh=("ctc.",))
    assert row["init_step"] == 7 and torch.equal(model.ctc.weight, head)
    assert torch.equal(model.column_mix.weight, plain.column_mix.weight)


def test_cli_ctc_option_trains_saves_the_head_and_warm_starts_from_a_run_without_it(tmp_path):
    """`train translator --ctc` saves the weight and a model with the head; a run without the head
    is a valid --init (the head starts fresh); the fixture's LMX is random tokens, which the
    staff reader must take without failing."""
    from test_translator_train import make_corpus
    from typer.testing import CliRunner

    from umust_cli.checkpoint import WEIGHTS, read_config, read_weights
    from umust_cli.cli.main import app
    from umust_cli.train.engine import read_log

    corpus, runner = make_corpus(tmp_path / "c", variants=False), CliRunner()
    base = ["train", "translator", "--data", str(corpus), "--preset", "tiny", "--tasks", "omr", "--max-steps", "2",
            "--device", "cpu", "--json", "--column-norm"]
    plain = runner.invoke(app, base + ["-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    result = runner.invoke(app, base + ["-o", str(tmp_path / "ctc"), "--ctc", "0.5", "--init", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "ctc")
    assert config["train"]["ctc"] == 0.5 and config["model"]["ctc_classes"] == len(pitch_names())
    assert read_weights(tmp_path / "ctc" / WEIGHTS)["ctc.weight"].shape[0] == 2 * CTC_FRAMES * 71
    log = read_log(tmp_path / "ctc")
    assert log[0]["init_step"] == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    # a head of other classes: the written-pitch run warm-starts a spelled-pitch one, head fresh
    spelled = runner.invoke(app, base + ["-o", str(tmp_path / "sp"), "--ctc", "0.5", "--ctc-target", "spelled",
                                         "--init", str(tmp_path / "ctc")])
    assert spelled.exit_code == 0, spelled.output
    config = read_config(tmp_path / "sp")
    assert config["model"]["ctc_classes"] == 210 and config["model"]["ctc_target"] == "spelled"
    assert read_weights(tmp_path / "sp" / WEIGHTS)["ctc.weight"].shape[0] == 2 * CTC_FRAMES * 211
    assert read_log(tmp_path / "sp")[0]["ctc_head"] == "spelled from the init's written head"
    marked = runner.invoke(app, base + ["-o", str(tmp_path / "mk"), "--ctc", "0.5", "--ctc-target", "marked",
                                        "--init", str(tmp_path / "ctc")])
    assert marked.exit_code == 0, marked.output
    assert read_config(tmp_path / "mk")["model"]["ctc_classes"] == 4 * 70
    assert read_log(tmp_path / "mk")[0]["ctc_head"] == "marked from the init's written head"
    bad = runner.invoke(app, base + ["-o", str(tmp_path / "bad"), "--ctc", "0.5", "--ctc-target", "heard"])
    assert bad.exit_code == 2 and "--ctc-target" in bad.output


def test_ctc_paths_merge_repeats_drop_blanks_and_stop_at_each_sources_columns():
    cfg = make_config("tiny", VOCAB, "column", ctc_classes=5)
    model = Translator(cfg).eval()
    bias = torch.full((2, CTC_FRAMES, 6), -10.0)            # (staves, frames, classes + blank)
    bias[0, 0, 2] = bias[0, 1, 5] = 10.0                     # staff 1: class 2, then blank, each column
    bias[1, :, 5] = 10.0                                     # staff 2: blank everywhere
    with torch.no_grad():
        model.ctc.weight.zero_()
        model.ctc.bias.copy_(bias.reshape(-1))
    src, sp = _image_batch(cfg, [4, 6])
    memory, mask = model.encode(src, sp, "image", "notation")
    # 4 and 6 patch columns, plus the column the [EOS] step sits in
    assert model.ctc_paths(memory, mask) == [[[2] * 5, []], [[2] * 7, []]]
    bias[0, 1, 5], bias[0, 1, 2] = -10.0, 10.0               # no blank between: one merged 2 per source
    with torch.no_grad():
        model.ctc.bias.copy_(bias.reshape(-1))
    assert model.ctc_paths(memory, mask) == [[[2], []], [[2], []]]


def test_read_pitches_replaces_aligned_pitches_and_keeps_the_rhythm():
    from umust_cli.data.staff_order import aligned_pairs, read_pitches, staff_pitch_positions

    positions = staff_pitch_positions(MEASURE)
    assert [[MEASURE[j] for j in p] for p in positions] == staff_pitch_sequences(MEASURE)
    assert aligned_pairs(["C4", "E4", "G4"], ["C4", "F4", "G4", "A4"]) == [(0, 0), (1, 1), (2, 2)]
    assert aligned_pairs(["C4", "E4", "G4"], ["E4"]) == [(1, 0)]
    assert aligned_pairs([], ["E4"]) == []
    # staff 1 read with one pitch wrong (G4 -> A4, the voice-2 half note); staff 2 with a note missing
    upper = ["E5", "A4", "D5", "C5", "D5", "C5"]
    lower = ["C3", "E3", "G3", "E3", "C3"]                   # F3 (the triplet's middle note) not read
    out, changed = read_pitches(MEASURE, [upper, lower])
    assert changed == 1 and staff_pitch_sequences(out)[0] == upper
    assert staff_pitch_sequences(out)[1] == ["C3", "E3", "G3", "F3", "E3", "C3"]   # kept: nothing aligned to it
    assert [t for t, o in zip(MEASURE, out) if t != o] == ["G4"] and len(out) == len(MEASURE)
    assert read_pitches(MEASURE, [[], []]) == (list(MEASURE), 0)


def test_ctc_emissions_give_each_pitch_its_image_column():
    cfg = make_config("tiny", VOCAB, "column", ctc_classes=5)
    model = Translator(cfg).eval()
    bias = torch.full((2, CTC_FRAMES, 6), -10.0)
    bias[0, 0, 2] = bias[0, 1, 5] = 10.0                     # staff 1: class 2 then blank, every column
    bias[1, 0, 3] = bias[1, 1, 4] = 10.0                     # staff 2: class 3 then class 4, every column
    with torch.no_grad():
        model.ctc.weight.zero_()
        model.ctc.bias.copy_(bias.reshape(-1))
    src, sp = _image_batch(cfg, [2, 3])
    memory, mask = model.encode(src, sp, "image", "notation")
    first, second = model.ctc_emissions(memory, mask)
    assert first[0] == [(0, 2), (1, 2), (2, 2)]               # 2 columns + the [EOS] column
    assert first[1] == [(c + f / CTC_FRAMES, k) for c in range(3) for f, k in enumerate((3, 4))]   # frame positions
    assert [col for col, _ in second[0]] == [0, 1, 2, 3]
    assert model.ctc_paths(memory, mask) == [[[p for _, p in s] for s in e] for e in (first, second)]


def test_column_notes_time_each_reading_by_its_column():
    from umust_cli.data.staff_order import ctc_class_pitches
    from umust_cli.translate.direct import (COLUMN_SECONDS, SYSTEM_GAP_COLUMNS, Reading, column_notes, reading_midi,
                                            staff_notes)

    names, written = pitch_names(), ctc_class_pitches("written")
    c4, e4, g4, c3 = (names.index(n) for n in ("C4", "E4", "G4", "C3"))
    staves = [[(0.5, c4), (1, e4), (4, g4)], [(1, c3)]]        # staff 1: chord C4-E4 written back to back
    notes = column_notes([staff_notes(s, "written", None) for s in staves], start=1.0, column_seconds=0.5)
    assert [(n.pitch, n.start, n.end) for n in notes] == [(60, 1.25, 3.0), (64, 1.25, 3.0), (48, 1.5, 2.0),
                                                           (67, 3.0, 3.5)]       # over two columns, then G4
    assert column_notes([[], []]) == []
    midi = reading_midi([Reading(5, staves, None), Reading(3, [[(0, g4)], []], None)], "written")
    piano = midi.instruments[0]
    assert len(piano.notes) == 5 and not piano.is_drum
    assert piano.notes[-1].start == pytest.approx((5 + SYSTEM_GAP_COLUMNS) * COLUMN_SECONDS)
    # a spelled head's classes are each name flat, natural, sharp: C4 natural, C4 sharp, D4 flat
    spelled = reading_midi([Reading(2, [[(0, 3 * c4 + 1), (1, 3 * c4 + 2), (1, 3 * (c4 + 1))], []], None)],
                           "spelled")
    assert [n.pitch for n in spelled.instruments[0].notes] == [60, 61, 61]
    assert len(ctc_class_pitches("spelled")) == 3 * len(names)


def test_chord_columns_join_rising_emissions_written_back_to_back():
    from umust_cli.translate.direct import chord_columns

    c4, e4, g4 = 60, 64, 67
    half = 1 / CTC_FRAMES
    assert chord_columns([]) == []
    # a chord C4-E4-G4 in consecutive frames: the two frames of column 5, then column 6's first
    assert chord_columns([(5, c4), (5 + half, e4), (6, g4)]) == [5 + 1 / 3] * 3
    # a blank frame between rising notes: separate onsets, each at its column
    assert chord_columns([(0, c4), (1, e4), (1 + half, g4)]) == [0.0, 1.0, 1.0]
    # falling or repeated pitches written back to back are separate onsets
    assert chord_columns([(3, g4), (3 + half, e4), (4, e4)]) == [3.0, 3.0, 4.0]


def test_spelled_pitches_follow_key_signatures_and_accidentals_in_the_measure():
    from umust_cli.data.staff_order import StaffTargets, ctc_classes, midi_of, pitch_alters, staff_spelled_sequences

    # G major; F#5 by the key, F5 natural, F5 again (natural holds in the measure), F#4 (another
    # octave: the key again), then B-flat in staff 2, and a new measure in F major: B-flat by the key
    tokens = ("measure key:fifths:1 staff:1 F5 voice:1 quarter staff:1 F5 quarter natural F5 quarter F4 quarter "
              "backup whole B2 voice:5 whole flat staff:2 "
              "measure key:fifths:-1 B4 voice:1 whole staff:1 F4 whole").split()
    assert [midi_of(tokens[j], a) for j, a in pitch_alters(tokens).items()] == [78, 77, 77, 66, 46, 70, 65]
    assert staff_spelled_sequences(tokens) == [[("F5", 1), ("F5", 0), ("F5", 0), ("F4", 1), ("B4", -1), ("F4", 0)],
                                               [("B2", -1)]]
    vocab = default_vocabulary()
    local = vocab.names("notation")
    names = {vocab.to_global("notation", [i])[0]: n for i, n in enumerate(local)}
    ids = torch.tensor([vocab.wrap("notation", [local.index(t) for t in tokens])])
    out = StaffTargets(names, target="spelled")(ids)
    classes = ctc_classes("spelled")
    assert [classes[i] for i in out[0, 0].tolist()] == staff_spelled_sequences(tokens)[0]
    assert [classes[i] for i in out[0, 1].tolist()[:1]] == [("B2", -1)] and out[0, 1].tolist()[1:] == [-1] * 5


def test_a_spelled_head_starts_from_a_written_one_reading_the_same_names():
    from umust_cli.data.staff_order import ctc_classes

    written = Translator(make_config("tiny", VOCAB, "column", ctc_classes=5)).eval()
    spelled = Translator(make_config("tiny", VOCAB, "column", ctc_classes=15, ctc_target="spelled")).eval()
    spelled.load_state_dict({k: v for k, v in written.state_dict().items() if not k.startswith("ctc.")}, strict=False)
    spelled.spell_ctc_head(written.ctc.weight, written.ctc.bias, 3, 1)
    src, sp = _image_batch(written.cfg, [4, 6])
    memory, mask = written.encode(src, sp, "image", "notation")
    paths = written.ctc_paths(memory, mask)
    # the spelled head reads the same names, natural (class 3n + 1), on the same columns
    assert spelled.ctc_paths(memory, mask) == [[[3 * c + 1 for c in s] for s in e] for e in paths]
    assert ctc_classes("spelled")[3 * 7 + 1] == (ctc_classes("written")[7][0], 0)
    with pytest.raises(Exception, match="does not spell"):
        spelled.spell_ctc_head(written.ctc.weight, written.ctc.bias, 2, 1)


def test_marked_classes_are_the_printed_accidentals_and_the_reading_applies_key_and_sign():
    from umust_cli.data.staff_order import MARKS, StaffTargets, ctc_classes, staff_marked_sequences
    from umust_cli.translate.direct import reading_pitches

    # G major: F5 (the key's sharp), F5 printed natural, F5 again (unmarked), F4; B2 printed flat
    tokens = ("measure key:fifths:1 staff:1 F5 voice:1 quarter staff:1 F5 quarter natural F5 quarter F4 quarter "
              "backup whole B2 voice:5 whole flat staff:2").split()
    assert staff_marked_sequences(tokens) == [[("F5", None), ("F5", 0), ("F5", None), ("F4", None)], [("B2", -1)]]
    vocab = default_vocabulary()
    local = vocab.names("notation")
    names = {vocab.to_global("notation", [i])[0]: n for i, n in enumerate(local)}
    out = StaffTargets(names, target="marked")(torch.tensor([vocab.wrap("notation", [local.index(t) for t in tokens])]))
    classes = ctc_classes("marked")
    assert len(classes) == len(MARKS) * len(ctc_classes("written"))
    assert [classes[i] for i in out[0, 0].tolist()] == staff_marked_sequences(tokens)[0]
    assert [classes[i] for i in out[0, 1].tolist()[:1]] == [("B2", -1)]
    at = {c: i for i, c in enumerate(classes)}
    g_major, no_key = reading_pitches("marked", 1), reading_pitches("marked", None)
    assert [g_major[at[c]] for c in [("F5", None), ("F5", 0), ("F5", 1), ("B2", -1), ("B2", None)]] == [78, 77, 78, 46, 47]
    assert [no_key[at[c]] for c in [("F5", None), ("F5", 1), ("B2", -1)]] == [77, 78, 46]


def test_notated_classes_mark_tied_continuations_and_bar_lines():
    from umust_cli.data.staff_order import BAR, TIE, StaffTargets, ctc_classes, staff_notated_sequences

    # three measures; staff 2 rests in the second; G4 tied over the first bar line, then a sharp C5
    tokens = ("measure key:fifths:0 staff:1 G4 voice:1 half tied:start staff:1 backup half C3 voice:5 half staff:2 "
              "measure G4 voice:1 quarter tied:stop staff:1 C5 quarter sharp C5 quarter chord E5 quarter "
              "measure A4 voice:1 half staff:1 backup half C3 voice:5 half staff:2").split()
    assert staff_notated_sequences(tokens) == [
        [("G4", None), BAR, ("G4", TIE), ("C5", 1), ("C5", None), ("E5", None), BAR, ("A4", None)],
        [("C3", None), BAR, BAR, ("C3", None)]]
    classes = ctc_classes("notated")
    assert len(classes) == 5 * len(ctc_classes("written")) + 1 and classes[-1] == BAR
    assert set(ctc_classes("marked")) < set(classes)
    vocab = default_vocabulary()
    local = vocab.names("notation")
    names = {vocab.to_global("notation", [i])[0]: n for i, n in enumerate(local)}
    out = StaffTargets(names, target="notated")(torch.tensor([vocab.wrap("notation", [local.index(t) for t in tokens])]))
    assert [classes[i] for i in out[0, 1].tolist()[:4]] == staff_notated_sequences(tokens)[1]


def test_a_notated_reading_carries_accidentals_to_the_bar_line_and_holds_tied_notes():
    from umust_cli.data.staff_order import BAR, TIE, ctc_classes
    from umust_cli.translate.direct import Reading, reading_midi, staff_notes

    at = {c: i for i, c in enumerate(ctc_classes("notated"))}
    # D major (F and C sharp): F4 printed natural, F4 unmarked (still natural), bar line, F4 (sharp again),
    # tied on over the next bar line (held, not struck), then C5 tied with no C5 before it (struck)
    staff = [(0, at[("F4", 0)]), (1, at[("F4", None)]), (2, at[BAR]), (3, at[("F4", None)]),
             (4, at[BAR]), (5, at[("F4", TIE)]), (6, at[("C5", TIE)])]
    notes = staff_notes(staff, "notated", 2)
    assert [(s.pitch, s.tied) for s in notes] == [(65, False), (65, False), (66, False), (66, True), (73, False)]
    played = reading_midi([Reading(8, [staff, []], 2, "notated")]).instruments[0].notes
    assert [(n.pitch, n.start) for n in played] == [(65, 0.0), (65, 0.12), (66, 0.36), (73, 0.72)]
    assert played[2].end == pytest.approx(0.72)               # F#4 held over the tie to C5's onset
    # a marked reading has no bar lines: a printed accidental holds for its note only
    marked = {c: i for i, c in enumerate(ctc_classes("marked"))}
    plain = staff_notes([(0, marked[("F4", 0)]), (1, marked[("F4", None)])], "marked", 2)
    assert [s.pitch for s in plain] == [65, 66]


def test_a_marked_head_starts_from_a_written_one_reading_the_same_names_unmarked():
    from umust_cli.data.staff_order import MARKS, ctc_classes

    written = Translator(make_config("tiny", VOCAB, "column", ctc_classes=5)).eval()
    marked = Translator(make_config("tiny", VOCAB, "column", ctc_classes=5 * len(MARKS), ctc_target="marked")).eval()
    marked.load_state_dict({k: v for k, v in written.state_dict().items() if not k.startswith("ctc.")}, strict=False)
    marked.spell_ctc_head(written.ctc.weight, written.ctc.bias, len(MARKS), 0)
    src, sp = _image_batch(written.cfg, [4, 6])
    memory, mask = written.encode(src, sp, "image", "notation")
    paths = written.ctc_paths(memory, mask)
    assert any(s for e in paths for s in e)
    assert marked.ctc_paths(memory, mask) == [[[len(MARKS) * c for c in s] for s in e] for e in paths]
    assert ctc_classes("marked")[len(MARKS) * 7] == (ctc_classes("written")[7][0], None)


# ---------------------------------------------------------------------------- the key-signature head

def test_key_head_needs_the_column_layout_and_learns_keys_from_the_first_columns():
    from umust_cli.model.translator import KEY_COLUMNS, KEY_FIFTHS

    with pytest.raises(BadInputError, match="column layout"):
        make_config("tiny", VOCAB, "grid", key_head=True)
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB, "column", key_head=True)
    model = Translator(cfg)
    src, sp = _image_batch(cfg, [4, 6, 14])                   # fewer and more columns than KEY_COLUMNS
    tgt, tp = _notation(cfg, 5)
    tgt, tp = torch.cat([tgt, tgt[:1]]), torch.cat([tp, tp[:1]])
    targets = torch.tensor([KEY_FIFTHS.index(-5), KEY_FIFTHS.index(2), -1])   # the third: key unknown
    model.train()
    _adds_a_trained_term(model, (src, sp, tgt, tp), model.key, {"key": 1.0, "key_targets": targets})
    assert model.key_loss(*model.encode(src, sp, "image", "notation"), torch.full((3,), -1)).item() == 0.0
    model.eval()
    memory, mask = (t.detach() for t in model.encode(src, sp, "image", "notation"))
    assert model.key_logits(memory, mask).shape == (3, len(KEY_FIFTHS)) and KEY_COLUMNS > 6
    opt = torch.optim.Adam(model.key.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        model.key_loss(memory, mask, targets).backward()
        opt.step()
    assert model.read_keys(memory, mask)[:2] == [-5, 2]
    # columns past the image (padding) do not change its key: the 4-column image alone reads the same
    alone = model.encode(src[:1, :sp[0, :, 0].gt(0).sum() + 8], sp[:1, :sp[0, :, 0].gt(0).sum() + 8], "image",
                         "notation")
    assert torch.allclose(model.key_logits(*alone)[0], model.key_logits(memory, mask)[0], atol=1e-4)


def test_key_logits_add_the_count_of_accidentals_and_their_kind():
    from umust_cli.model.translator import KEY_COUNTS, KEY_FIFTHS
    from umust_cli.train.translator import TrainConfig, _param_groups

    model = Translator(make_config("tiny", VOCAB, "column", key_head=True)).eval()
    src, sp = _image_batch(model.cfg, [4])
    memory, mask = model.encode(src, sp, "image", "notation")
    with torch.no_grad():
        model.key.weight.zero_()
        model.key.bias.copy_(torch.tensor([0.0, 0, 0, 2.0, 0, 0, 0, 0, 1.0, 0.5]))   # 3 accidentals; flat 1, sharp 0.5
    logits = model.key_logits(memory, mask)[0]
    assert logits[KEY_FIFTHS.index(-3)] == 3.0 and logits[KEY_FIFTHS.index(3)] == 2.5 and KEY_COUNTS == 8
    assert logits[KEY_FIFTHS.index(0)] == 0.0 and logits[KEY_FIFTHS.index(-1)] == 1.0
    assert model.read_keys(memory, mask) == [-3]
    groups = _param_groups(model, TrainConfig(key_loss=1.0, key_lr_scale=10.0))
    assert len(groups) == 2 and groups[1]["lr_scale"] == 10.0 and groups[1]["params"][0] is model.key.weight
    assert len(_param_groups(Translator(make_config("tiny", VOCAB, "column")), TrainConfig())) == 1
    both = Translator(make_config("tiny", VOCAB, "column", ctc_classes=5, key_head=True))
    groups = _param_groups(both, TrainConfig(ctc=1.0, ctc_lr_scale=5.0, key_loss=1.0))
    assert [g.get("lr_scale") for g in groups] == [None, 10.0, 5.0] and groups[2]["params"][0] is both.ctc.weight
    assert sum(len(g["params"]) for g in groups) == len(list(both.parameters()))
    # at the default scale the CTC head stays with the model: the groups of runs saved before the option
    assert [g.get("lr_scale") for g in _param_groups(both, TrainConfig(ctc=1.0, key_loss=1.0))] == [None, 10.0]


def test_system_keys_and_key_targets_come_from_the_first_key_signature():
    from umust_cli.data.staff_order import system_key
    from umust_cli.train.translator import _key_targets

    assert system_key(MEASURE) == 0 and system_key("measure key:fifths:-5 key:fifths:2".split()) == -5
    assert system_key("measure C4 quarter".split()) is None
    vocab = default_vocabulary()
    local = vocab.names("notation")
    names = {vocab.to_global("notation", [i])[0]: n for i, n in enumerate(local)}
    flat = ["measure", "key:fifths:-3"] + MEASURE[2:]
    ids = torch.tensor([vocab.wrap("notation", [local.index(t) for t in seq]) + [0] * (len(MEASURE) - len(seq))
                        for seq in (MEASURE, flat, MEASURE[4:])])
    assert StaffTargets(names).keys(ids) == [0, -3, None]
    assert _key_targets([0, -3, None, 9]).tolist() == [7, 4, -1, -1]


def test_the_reading_applies_the_key_it_reads_to_written_pitches():
    from umust_cli.translate.direct import Reading, reading_midi, reading_pitches, with_key

    names = pitch_names()
    b4, e4, f4, c5 = (names.index(n) for n in ("B4", "E4", "F4", "C5"))
    staves = [[(0, b4), (1, e4), (2, f4), (3, c5)], []]
    def played(fifths):
        return [n.pitch for n in reading_midi([Reading(4, staves, fifths)], "written").instruments[0].notes]
    assert played(None) == played(0) == [71, 64, 65, 72]
    assert played(-2) == [70, 63, 65, 72]                     # B-flat major: B and E lowered
    assert played(5) == [71, 63 + 1, 66, 73]                  # B major: F, C, G, D, A sharp (E4 stays)
    assert reading_pitches("spelled", -2) == reading_pitches("spelled", None)   # spelled classes keep theirs
    assert with_key(MEASURE, -4)[:2] == ["measure", "key:fifths:-4"] and len(with_key(MEASURE, -4)) == len(MEASURE)
    assert with_key(MEASURE, None) == list(MEASURE) and with_key(MEASURE[4:], 3) == MEASURE[4:]


def test_warm_start_adds_a_key_head_and_eval_reports_its_accuracy(tmp_path):
    from test_translator_train import make_corpus
    from typer.testing import CliRunner

    from umust_cli.checkpoint import read_config
    from umust_cli.cli.main import app
    from umust_cli.train.engine import read_log

    corpus, runner = make_corpus(tmp_path / "c", variants=False), CliRunner()
    base = ["train", "translator", "--data", str(corpus), "--preset", "tiny", "--tasks", "omr", "--max-steps", "2",
            "--device", "cpu", "--json", "--column-norm", "--eval-items", "1"]
    plain = runner.invoke(app, base + ["-o", str(tmp_path / "plain"), "--ctc", "0.5"])
    assert plain.exit_code == 0, plain.output
    keyed = runner.invoke(app, base + ["-o", str(tmp_path / "key"), "--ctc", "0.5", "--key-loss", "1.0",
                                       "--init", str(tmp_path / "plain")])
    assert keyed.exit_code == 0, keyed.output
    config = read_config(tmp_path / "key")
    assert config["train"]["key_loss"] == 1.0 and config["model"]["key_head"] is True
    ev = [r["eval"] for r in read_log(tmp_path / "key") if "eval" in r][-1]
    assert 0.0 <= ev["key_accuracy"] <= 1.0 and ev["key_systems"] > 0
