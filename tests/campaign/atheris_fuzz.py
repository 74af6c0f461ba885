"""Coverage-guided fuzzing of one protocol target with atheris (libFuzzer).

    python tests/campaign/atheris_fuzz.py TARGET CORPUS_DIR -runs=N -seed=1 [libFuzzer flags]

TARGET is a key of campaign_fuzz.BYTE_TARGETS. The valid inputs of
campaign_fuzz.SEEDS[TARGET] are written to CORPUS_DIR first, so libFuzzer
mutates valid packets, keysets and CJ documents as well as growing its own
inputs. An input that raises anything but the documented error is a crash:
libFuzzer writes it under -artifact_prefix and exits non-zero. Run by
test_campaign_atheris.py (bounded by -runs and -max_total_time).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent / "src")]

with atheris.instrument_imports(include=["handover"]):
    import handover.protocol.canonical
    import handover.protocol.keyset
    import handover.protocol.opening  # noqa: F401

import campaign_fuzz  # noqa: E402


def main() -> None:
    name, corpus = sys.argv[1], Path(sys.argv[2])
    target = campaign_fuzz.BYTE_TARGETS[name]
    corpus.mkdir(parents=True, exist_ok=True)
    for data in campaign_fuzz.SEEDS[name]:
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
