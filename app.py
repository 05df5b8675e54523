"""idgen demo: ``python app.py`` (real checkpoints) or ``python app.py --tiny`` (offline, tiny random models).

All logic lives in :mod:`idgen.demo`; this file only reads the flags and starts the server.
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from idgen.cli.common import add_model_arguments

    parser = argparse.ArgumentParser(description="idgen Gradio demo")
    add_model_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    server.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    server.add_argument("--concurrency", type=int, default=1, help="generations running at once")
    server.add_argument("--max-queue", type=int, default=16, help="requests waiting at most")
    server.add_argument("--max-file-size", default="10mb", help="largest accepted upload")
    server.add_argument("--allow-folder", action="append", metavar="PATH",
                        help="a server folder (one sub-folder of photos per person) that the Forget → Recogniser tab "
                             "offers; repeatable; default: none (the tab reads only uploaded zips and the Dataset "
                             "tab's dataset, never a path a visitor types)")
    return parser


def main(argv=None) -> None:
    import signal

    from idgen.application import settings_from_args
    from idgen.demo import ModelHub, build_demo, launch
    from idgen.errors import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as error:   # e.g. an --allow-folder that is not a folder
        parser.error(str(error))
    # SIGTERM stops the server as Ctrl+C does; either way Gradio deletes its copies of uploads and
    # results, and closing the page deletes its workspace (every request's folder)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = build_demo(ModelHub(settings))
    try:
        launch(demo, host=args.host, port=args.port, concurrency=args.concurrency, max_queue=args.max_queue,
               max_file_size=args.max_file_size)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
