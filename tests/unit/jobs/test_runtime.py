from jobs.runtime import actor_args, base_parser


def test_every_driver_shares_its_options_and_names_its_module():
    p = base_parser("link", "Memory linking job.")
    assert p.prog == "python -m jobs.link"
    args = p.parse_args(["--job-id", "j", "--user-id", "u", "--num-gpus", "0.25"])
    assert (args.job_id, args.user_id, args.app, args.batch_size) == ("j", "u", "memserve", 64)
    opts = actor_args(args)
    assert (opts["batch_size"], opts["num_cpus"], opts["num_gpus"]) == (64, 0.1, 0.25)
    assert "num_gpus" not in actor_args(p.parse_args([]))  # CPU actors ask for no GPU share
