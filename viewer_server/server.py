"""HTTP for the viewer: the standard library's ThreadingHTTPServer, the page from viewer/, a small JSON API.

    GET  /                  the page (viewer/index.html; viewer/*.js, *.css beside it)
    GET  /api/info          the image and model: sizes, tile sides (largest, smallest), zoom limit, precision
    GET  /api/input.png     the input image (the page's preview, and what it shows below x1)
    GET  /api/tile?kind=liif|bicubic&height=H&width=W&i=I&j=J&client=C&gen=G[&th=TH&tw=TW&sy=R&sx=C]
                            one tile, PNG (tiles of TH x TW px, default the info's tile; they start
                            R rows / C columns before the grid, default 0)
    POST /api/view?client=C&gen=G                     the client moved to view G: older work stops
    POST /api/save  {"width": W, "height": H}         write the whole image at that size (202)
    GET  /api/save          the last save's state

Every refusal is one JSON object {"error": "..."} with a 4xx status; a tile superseded by a newer
view of the same client answers 409 {"error": "superseded"}. A client that disconnects mid-answer
is logged at debug level, and the server keeps serving.
"""
import json
import logging
import os
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from viewer_server.app import RequestError, Superseded, ViewerApp

log = logging.getLogger(__name__)

PAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'viewer')
CONTENT_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                 '.css': 'text/css; charset=utf-8', '.png': 'image/png'}
MAX_BODY = 4096
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def page_files(folder: str = PAGE_DIR) -> Dict[str, str]:
    """URL path -> file of the page's folder (only these are served: no path ever reaches the file system)."""
    files = {'/' + name: os.path.join(folder, name) for name in sorted(os.listdir(folder))
             if os.path.splitext(name)[1] in CONTENT_TYPES}
    files['/'] = files['/index.html']
    return files


class ViewerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the ViewerApp and the page; one daemon thread per request."""
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], app: ViewerApp):
        self.app = app
        self.files = page_files()
        super().__init__(address, ViewerHandler)

    @property
    def url(self) -> str:
        """http://host:port/ of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an unexpected error of one request in one line group; the server keeps serving."""
        log.exception("request from %s failed", client_address[0])


class ViewerHandler(BaseHTTPRequestHandler):
    """One request: routes to the ViewerApp, answers JSON errors, survives clients that hang up."""
    server: ViewerServer
    protocol_version = 'HTTP/1.1'
    # an idle kept-alive connection holds a thread: let it go after a minute (threads stay bounded)
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        """Access log at debug level only (the console stays readable)."""
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The standard library's own refusals (malformed request line, headers, URL too long) as JSON too."""
        self.close_connection = True
        self._send(code, *json_body({'error': message or HTTPStatus(code).phrase}))

    def do_GET(self) -> None:
        """Page files, info, input image, tiles, save state."""
        self._answer(self._get)

    def do_POST(self) -> None:
        """View changes and saves."""
        self._answer(self._post)

    def do_PUT(self) -> None:
        """Not an action of the viewer."""
        self._answer(self._refuse)

    do_DELETE = do_PATCH = do_PUT

    def _refuse(self, url) -> Tuple[int, str, bytes]:
        self.close_connection = True
        raise RequestError(405, f"{self.command} is not an action of the viewer (GET and POST are)")

    def _answer(self, route) -> None:
        try:
            status, ctype, body = route(urlsplit(self.path))
        except RequestError as e:
            status, ctype, body = e.status, *json_body({'error': str(e)})
        except Superseded:
            status, ctype, body = HTTPStatus.CONFLICT, *json_body({'error': 'superseded'})
        except DISCONNECTS:
            log.debug("client %s hung up", self.address_string())
            self.close_connection = True
            return
        self._send(status, ctype, body)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header('Content-Type', ctype)
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Cache-Control', 'no-store')
            self.end_headers()
            self.wfile.write(body)
        except DISCONNECTS:
            log.debug("client %s hung up before the answer", self.address_string())
            self.close_connection = True

    def _get(self, url) -> Tuple[int, str, bytes]:
        app, q = self.server.app, parse_qs(url.query)
        if url.path in self.server.files:
            path = self.server.files[url.path]
            with open(path, 'rb') as f:
                return HTTPStatus.OK, CONTENT_TYPES[os.path.splitext(path)[1]], f.read()
        if url.path == '/api/info':
            return HTTPStatus.OK, *json_body(app.info())
        if url.path == '/api/input.png':
            return HTTPStatus.OK, 'image/png', app.input_png
        if url.path == '/api/tile':
            shift = (int_param(q, 'sy', '0'), int_param(q, 'sx', '0'))
            size_hw = (int_param(q, 'th', str(app.tile)), int_param(q, 'tw', str(app.tile)))
            data = app.tile_png(text_param(q, 'kind', 'liif'), int_param(q, 'height'), int_param(q, 'width'),
                                int_param(q, 'i'), int_param(q, 'j'), text_param(q, 'client'), int_param(q, 'gen'),
                                shift, size_hw)
            return HTTPStatus.OK, 'image/png', data
        if url.path == '/api/save':
            return HTTPStatus.OK, *json_body(vars(app.save_job))
        raise RequestError(404, f"no such page: {url.path}")

    def _post(self, url) -> Tuple[int, str, bytes]:
        app, q = self.server.app, parse_qs(url.query)
        body = self._body()
        if url.path == '/api/view':
            current = app.view(text_param(q, 'client'), int_param(q, 'gen'))
            return HTTPStatus.OK, *json_body({'current': current})
        if url.path == '/api/save':
            try:
                values = json.loads(body or b'{}')
                height, width = int(values['height']), int(values['width'])
            except (ValueError, TypeError, KeyError, AttributeError):
                raise RequestError(400, 'save takes JSON {"width": W, "height": H} in pixels') from None
            return HTTPStatus.ACCEPTED, *json_body(vars(app.start_save(height, width)))
        raise RequestError(404, f"no such action: {url.path}")

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            raise RequestError(400, "Content-Length must be a number") from None
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            raise RequestError(413, f"request body of {length} bytes: at most {MAX_BODY}")
        return self.rfile.read(length) if length else b''


def json_body(value: Dict[str, Any]) -> Tuple[str, bytes]:
    """(content type, bytes) of a JSON answer."""
    return 'application/json', json.dumps(value).encode()


def text_param(q: Dict[str, list], name: str, default: Optional[str] = None) -> str:
    """One query-string parameter; RequestError if missing (without a default) or repeated."""
    values = q.get(name)
    if not values:
        if default is None:
            raise RequestError(400, f"missing parameter {name}")
        return default
    if len(values) > 1:
        raise RequestError(400, f"parameter {name} given {len(values)} times")
    return values[0]


def int_param(q: Dict[str, list], name: str, default: Optional[str] = None) -> int:
    """An integer query-string parameter of at most 12 digits (default: required); RequestError otherwise."""
    text = text_param(q, name, default)
    if not (text.lstrip('-').isdigit() and len(text) <= 12):
        raise RequestError(400, f"parameter {name} must be an integer, not {text[:40]!r}")
    return int(text)


def serve(app: ViewerApp, host: str = '127.0.0.1', port: int = 8000) -> ViewerServer:
    """A bound (not yet serving) ViewerServer; port 0 picks a free port."""
    return ViewerServer((host, port), app)
