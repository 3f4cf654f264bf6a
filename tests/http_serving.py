# Copyright (c) OpenMMLab. All rights reserved.
"""Serve a folder over HTTP from a thread, for tests of URL checkpoints."""
import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_directory(directory):
    """Serve ``directory`` on a free local port; yield its base URL.

    Args:
        directory (str): The folder whose files are served.

    Yields:
        str: ``http://127.0.0.1:PORT``.
    """
    handler = functools.partial(QuietHandler, directory=str(directory))
    with ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f'http://127.0.0.1:{server.server_address[1]}'
        finally:
            server.shutdown()
            thread.join()
