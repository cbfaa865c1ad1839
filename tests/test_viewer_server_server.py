"""The viewer's HTTP face, hit with urllib on a server started on port 0 in a thread."""
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.test_viewer_server_app import decode, tiny_app
from viewer_server.server import serve


@pytest.fixture
def server(tmp_path):
    srv = serve(tiny_app(tmp_path), '127.0.0.1', 0)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv, path, data=None, method=None):
    """(status, content type, body) of one request."""
    req = urllib.request.Request(srv.url + path.lstrip('/'), data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers['Content-Type'], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers['Content-Type'], e.read()


def error_of(srv, path, **kwargs):
    status, ctype, body = get(srv, path, **kwargs)
    assert ctype == 'application/json', (path, body[:100])
    reply = json.loads(body)
    assert list(reply) == ['error'] and '\n' not in reply['error']
    return status, reply['error']


def test_binds_to_this_machine_only_by_default(server):
    assert server.server_address[0] == '127.0.0.1' and server.url.startswith('http://127.0.0.1:')


def test_serves_the_page_info_input_and_tiles(server):
    status, ctype, body = get(server, '/')
    assert status == 200 and ctype.startswith('text/html') and b'viewer.js' in body
    assert get(server, '/viewer.js')[0] == 200 and get(server, '/viewer.css')[0] == 200
    info = json.loads(get(server, '/api/info')[2])
    assert (info['width'], info['height'], info['tile'], info['min_tile'], info['max_zoom']) == (14, 10, 16, 16, 64)
    assert decode(get(server, '/api/input.png')[2]).shape == (10, 14, 3)
    status, ctype, body = get(server, '/api/tile?kind=liif&height=37&width=52&i=2&j=3&client=t&gen=1')
    assert status == 200 and ctype == 'image/png' and decode(body).shape == (5, 4, 3)
    body = get(server, '/api/tile?kind=liif&height=37&width=52&i=2&j=3&sy=5&sx=9&client=t&gen=1')[2]
    assert decode(body).shape == (10, 13, 3)     # rows 32 - 5 = 27..37, columns 48 - 9 = 39..52: cut by the grid


@pytest.mark.parametrize('path, status, match', [
    ('/api/tile?height=37&width=52&i=0&j=0&client=t', 400, 'missing parameter gen'),
    ('/api/tile?height=1e9&width=52&i=0&j=0&client=t&gen=1', 400, 'height must be an integer'),
    ('/api/tile?height=99999999999&width=52&i=0&j=0&client=t&gen=1', 400, "beyond the viewer's limit"),
    ('/api/tile?height=37&width=52&i=99&j=0&client=t&gen=1', 400, 'outside'),
    ('/api/tile?height=37&width=52&i=0&i=1&j=0&client=t&gen=1', 400, 'given 2 times'),
    ('/api/tile?height=37&width=52&i=0&j=0&client=t&gen=1&kind=x', 400, 'kind must be'),
    ('/api/tile?height=37&width=52&i=0&j=0&sy=16&client=t&gen=1', 400, 'shift'),
    ('/api/tile?height=37&width=52&i=0&j=0&th=17&client=t&gen=1', 400, 'tile size 16x17 must be'),
    ('/api/tile?height=37&width=52&i=0&j=0&sx=a&client=t&gen=1', 400, 'sx must be an integer'),
    ('/../../etc/passwd', 404, 'no such page'),
    ('/api/nothing', 404, 'no such page'),
])
def test_bad_requests_get_one_json_error(server, path, status, match):
    got, message = error_of(server, path)
    assert got == status and match in message


def test_bad_posts_and_methods_get_one_json_error(server):
    assert error_of(server, '/api/save', data=b'{"width": "a"}') == \
        (400, 'save takes JSON {"width": W, "height": H} in pixels')
    assert error_of(server, '/api/save', data=b'[1, 2]')[0] == 400
    assert error_of(server, '/api/save', data=b'x' * 5000)[0] == 413
    assert error_of(server, '/api/save', data=b'{"width": 5, "height": 5}')[0] == 400
    assert error_of(server, '/api/tile', method='PUT')[0] == 405
    assert error_of(server, '/api/view?client=t&gen=x', data=b'')[0] == 400


def raw_reply(srv, request: bytes) -> bytes:
    """Everything the server sends back to one raw request (it closes the connection after a refusal)."""
    data = b''
    with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
        sock.sendall(request)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_malformed_requests_are_one_json_error(server):
    head, body = raw_reply(server, b'GET /' + b'a' * 70000 + b' HTTP/1.1\r\n\r\n').split(b'\r\n\r\n', 1)
    assert head.startswith(b'HTTP/1.1 414') and b'application/json' in head
    assert json.loads(body) == {'error': 'Request-URI Too Long'}
    # a request line without a version is HTTP/0.9 to the standard library: a body, no status line
    assert json.loads(raw_reply(server, b'GARBAGE\r\n\r\n')) == {'error': "Bad request syntax ('GARBAGE')"}


def test_a_superseded_tile_is_409_and_the_next_view_renders(server):
    status, _, body = get(server, '/api/view?client=tab&gen=5', data=b'')
    assert status == 200 and json.loads(body) == {'current': True}
    assert error_of(server, '/api/tile?height=37&width=52&i=0&j=0&client=tab&gen=4') == (409, 'superseded')
    assert get(server, '/api/tile?height=37&width=52&i=0&j=0&client=tab&gen=5')[0] == 200
    assert get(server, '/api/tile?height=37&width=52&i=0&j=0&client=other&gen=1')[0] == 200  # another tab


def test_a_client_hanging_up_mid_render_leaves_the_server_serving(server, monkeypatch, caplog):
    renderer = server.app.renderer
    real = renderer.render
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(renderer, 'render', slow)
    host, port = server.server_address[:2]
    with caplog.at_level(logging.DEBUG, logger='viewer_server'):
        for _ in range(2):
            sock = socket.create_connection((host, port))
            sock.sendall(b'GET /api/tile?height=40&width=56&i=0&j=0&client=gone&gen=1 HTTP/1.1\r\nHost: x\r\n\r\n')
            assert started.wait(5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
            sock.close()                 # a reset, as a browser's aborted fetch
            started.clear()
            server.app.cache = type(server.app.cache)(1)  # render again on the next round
        time.sleep(0.8)
        assert get(server, '/api/info')[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_two_tabs_at_once_both_get_their_tiles(server):
    results = {}

    def tab(name, i):
        results[name] = get(server, f'/api/tile?height=37&width=52&i={i}&j=1&client={name}&gen=1')

    threads = [threading.Thread(target=tab, args=(f'tab{n}', n)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ['tab0', 'tab1', 'tab2']
    assert all(r[0] == 200 and decode(r[2]).shape[2] == 3 for r in results.values())
