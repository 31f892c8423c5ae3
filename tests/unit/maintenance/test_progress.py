from serve_app.maintenance.progress import Progress


def test_progress_rate_and_eta_count_this_run_only():
    now = [100.0]
    p = Progress(total=100, done=40, clock=lambda: now[0])
    assert p.rate_per_s is None and p.eta_s is None
    now[0] += 10
    p.add(20)
    assert p.rate_per_s == 2.0 and p.eta_s == 20.0
    assert "60/100 (60.0%)" in p.line("queue")
    p.add(40)
    assert p.eta_s == 0.0
