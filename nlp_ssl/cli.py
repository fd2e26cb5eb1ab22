"""Entry-point glue: a run ends with one line naming the culprit and a documented exit code
(``nlp_ssl.errors``), never a traceback for anything but a bug."""

from __future__ import annotations

import logging
import sys

from nlp_ssl import run_lock
from nlp_ssl.errors import EXIT_INTERRUPTED, NlpSslError, RunEnded


def run(main) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except NlpSslError as e:
        run_lock.release_all()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except RunEnded as e:
        print(str(e) if e.exit_code == 0 else f"stopped: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:  # before training: there is nothing to save yet
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
