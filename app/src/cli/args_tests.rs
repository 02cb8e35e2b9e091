//! Parsing tests for every command of the `vmr` command line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn parse(line: &str) -> Cli {
    Cli::try_parse_from(line.split_whitespace())
        .unwrap_or_else(|err| panic!("`{line}` should parse: {err}"))
}

fn refuse(line: &str) -> String {
    match Cli::try_parse_from(line.split_whitespace()) {
        Ok(cli) => panic!("`{line}` should be refused, parsed as {cli:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn global_options_go_anywhere() {
    let cli = parse("vmr --socket /tmp/v.sock -o json ps");
    assert_eq!(
        cli.global.socket.as_deref(),
        Some(std::path::Path::new("/tmp/v.sock"))
    );
    assert_eq!(cli.global.output, OutputFormat::Json);
    let cli = parse("vmr ps -a --context lab -o json");
    assert_eq!(cli.global.context.as_deref(), Some("lab"));
    assert_eq!(cli.global.output, OutputFormat::Json);
    assert!(matches!(cli.command, Command::Ps(PsArgs { all: true, .. })));
    assert_eq!(parse("vmr health").global.output, OutputFormat::Table);
    assert!(refuse("vmr -o yaml health").contains("yaml"));
}

#[test]
fn system_commands() {
    assert!(matches!(parse("vmr health").command, Command::Health));
    assert!(matches!(parse("vmr version").command, Command::Version));
    assert!(matches!(
        parse("vmr system check").command,
        Command::System(SystemCommand::Check)
    ));
}

#[test]
fn import_takes_a_vmfile_and_tags() {
    let Command::Import(args) = parse("vmr import -f ./VMFile -t 1.0 --tag latest").command else {
        panic!("import");
    };
    assert_eq!(args.file, PathBuf::from("./VMFile"));
    assert_eq!(args.tags, ["1.0", "latest"]);
    refuse("vmr import -t 1.0");
}

#[test]
fn image_commands() {
    let Command::Images(args) = parse("vmr images").command else {
        panic!("images")
    };
    assert_eq!(args.repository, None);
    let Command::Image(ImageCommand::Ls(args)) = parse("vmr image ls nixos/base").command else {
        panic!("image ls");
    };
    assert_eq!(args.repository.as_deref(), Some("nixos/base"));
    assert!(matches!(
        parse("vmr image list").command,
        Command::Image(ImageCommand::Ls(_))
    ));
    let Command::Image(ImageCommand::Prune(args)) = parse("vmr image prune --all").command else {
        panic!("prune");
    };
    assert!(args.all);
    let Command::Tag(args) = parse("vmr tag a/b:1 a/b:2").command else {
        panic!("tag")
    };
    assert_eq!(
        (args.source.as_str(), args.target.as_str()),
        ("a/b:1", "a/b:2")
    );
    refuse("vmr tag a/b:1");
    let Command::Rmi(args) = parse("vmr rmi -f a:1 b:2").command else {
        panic!("rmi")
    };
    assert!(args.force);
    assert_eq!(args.references, ["a:1", "b:2"]);
    refuse("vmr rmi");
    let Command::Push(args) = parse("vmr push reg.example/a/b:1").command else {
        panic!("push")
    };
    assert_eq!(args.reference, "reg.example/a/b:1");
    assert!(matches!(parse("vmr pull a/b").command, Command::Pull(_)));
}

#[test]
fn auth_commands() {
    let Command::Login(args) = parse("vmr login").command else {
        panic!("login")
    };
    assert_eq!((args.username, args.password_stdin), (None, false));
    let Command::Login(args) = parse("vmr login --username ana --password-stdin").command else {
        panic!("login");
    };
    assert_eq!(
        (args.username.as_deref(), args.password_stdin),
        (Some("ana"), true)
    );
    // The password comes from stdin, so the user name cannot be asked there too.
    refuse("vmr login --password-stdin");
    assert!(matches!(parse("vmr logout").command, Command::Logout));
    let Command::Register(args) =
        parse("vmr register -u ana --email a@example.org --password-stdin").command
    else {
        panic!("register");
    };
    assert_eq!(args.email.as_deref(), Some("a@example.org"));
    assert!(args.password_stdin);
}

#[test]
fn run_takes_every_flag() {
    let line = "vmr run nixos/base:1 --name web --cpu 4 --memory 4GiB --disk-size 20G \
                --network lan:10.0.0.5 --network wan --user-data ./ud.yaml --restart on-failure";
    let Command::Run(args) = parse(line).command else {
        panic!("run")
    };
    assert_eq!(args.image, "nixos/base:1");
    assert_eq!(args.name, "web");
    assert_eq!(args.cpu, Some(4));
    assert_eq!(args.memory, Some(4 << 30));
    assert_eq!(args.disk_size, Some(20 << 30));
    assert_eq!(
        args.networks,
        [
            NetworkArg {
                network: "lan".to_owned(),
                static_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
                prefix_len: None,
            },
            NetworkArg {
                network: "wan".to_owned(),
                ..NetworkArg::default()
            },
        ]
    );
    assert_eq!(args.user_data, Some(PathBuf::from("./ud.yaml")));
    assert_eq!(args.restart, Some(RestartPolicy::OnFailure));

    let Command::Create(args) = parse("vmr create nixos/base --name db --memory 1000MB").command
    else {
        panic!("create");
    };
    assert_eq!(args.memory, Some(1_000_000_000));
    assert_eq!(args.cpu, None);
    assert!(args.networks.is_empty());
}

#[test]
fn run_refuses_bad_values_client_side() {
    refuse("vmr run img");
    assert!(refuse("vmr run img --name a --memory 4XB").contains("4XB"));
    refuse("vmr run img --name a --cpu 0");
    refuse("vmr run img --name a --cpu 257");
    assert!(refuse("vmr run img --name a --restart sometimes").contains("restart policy"));
    assert!(refuse("vmr run img --name a --network lan:10.0.0.300").contains("not an IP address"));
    refuse("vmr run img --name a --network :10.0.0.3");
}

#[test]
fn network_flag_splits_at_the_first_colon() {
    assert_eq!(
        parse_network("lan"),
        Ok(NetworkArg {
            network: "lan".to_owned(),
            ..NetworkArg::default()
        })
    );
    assert_eq!(
        parse_network("br:192.168.70.10/24").map(|arg| (arg.static_ip, arg.prefix_len)),
        Ok((Some(IpAddr::V4(Ipv4Addr::new(192, 168, 70, 10))), Some(24)))
    );
    assert!(
        parse_network("br:192.168.70.10/33")
            .unwrap_err()
            .contains("prefix length")
    );
    assert!(parse_network("br:192.168.70.10/").is_err());
    assert_eq!(
        parse_network("lan:192.168.70.10").map(|arg| arg.static_ip),
        Ok(Some(IpAddr::V4(Ipv4Addr::new(192, 168, 70, 10))))
    );
    assert_eq!(
        parse_network("v6:fd00::5").map(|arg| arg.static_ip),
        Ok(Some(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5))))
    );
    assert!(parse_network("lan:").is_err());
    assert!(parse_network("").is_err());
}

#[test]
fn vm_lifecycle_commands() {
    let Command::Start(args) = parse("vmr start a b").command else {
        panic!("start")
    };
    assert_eq!(args.names, ["a", "b"]);
    refuse("vmr start");
    let Command::Restart(args) = parse("vmr restart -t 5 a").command else {
        panic!("restart")
    };
    assert_eq!(args.timeout, Some(5));
    let Command::Stop(args) = parse("vmr stop --force --timeout 30 a b").command else {
        panic!("stop");
    };
    assert!(args.force);
    assert_eq!(args.timeout, Some(30));
    assert_eq!(args.names, ["a", "b"]);
    let Command::Rm(args) = parse("vmr rm -f a").command else {
        panic!("rm")
    };
    assert!(args.force);
    let Command::Ps(args) = parse("vmr ps --project shop").command else {
        panic!("ps")
    };
    assert!(!args.all);
    assert_eq!(args.project.as_deref(), Some("shop"));
}

#[test]
fn inspect_type_is_optional() {
    let Command::Inspect(args) = parse("vmr inspect web").command else {
        panic!("inspect")
    };
    assert_eq!((args.kind, args.target.as_str()), (None, "web"));
    let Command::Inspect(args) = parse("vmr inspect --type image a/b:1").command else {
        panic!("inspect");
    };
    assert_eq!(args.kind, Some(InspectType::Image));
    assert_eq!(
        match parse("vmr inspect --type vm web").command {
            Command::Inspect(args) => args.kind,
            _ => None,
        },
        Some(InspectType::Vm)
    );
    refuse("vmr inspect --type volume x");
}

#[test]
fn network_commands() {
    let line = "vmr network create lab --mode isolated --subnet 10.9.0.0/24 --gateway 10.9.0.1 \
                --dhcp-start 10.9.0.100 --dhcp-end 10.9.0.200";
    let Command::Network(NetworkCommand::Create(args)) = parse(line).command else {
        panic!("network create");
    };
    assert_eq!(args.mode, NetworkMode::Isolated);
    assert_eq!(
        args.subnet.map(|net| net.to_string()).as_deref(),
        Some("10.9.0.0/24")
    );
    assert!(!args.no_dhcp);

    let Command::Network(NetworkCommand::Create(args)) =
        parse("vmr network create lan --mode bridged --bridge br0 --no-dhcp").command
    else {
        panic!("network create");
    };
    assert_eq!(args.bridge.as_deref(), Some("br0"));
    assert!(args.no_dhcp);

    refuse("vmr network create lab");
    refuse("vmr network create lab --mode wormhole");
    refuse("vmr network create lab --mode nat --subnet 10.9.0.0/33");
    // A DHCP range needs both ends, and contradicts --no-dhcp.
    refuse("vmr network create lab --mode nat --dhcp-start 10.9.0.100");
    refuse("vmr network create lab --mode nat --dhcp-start 10.0.0.2 --dhcp-end 10.0.0.9 --no-dhcp");

    assert!(matches!(
        parse("vmr network ls").command,
        Command::Network(NetworkCommand::Ls)
    ));
    for (line, expected) in [
        ("vmr network inspect lab", "inspect"),
        ("vmr network start lab", "start"),
        ("vmr network stop lab", "stop"),
        ("vmr network rm lab", "rm"),
    ] {
        let (kind, name) = match parse(line).command {
            Command::Network(NetworkCommand::Inspect(arg)) => ("inspect", arg.name),
            Command::Network(NetworkCommand::Start(arg)) => ("start", arg.name),
            Command::Network(NetworkCommand::Stop(arg)) => ("stop", arg.name),
            Command::Network(NetworkCommand::Rm(arg)) => ("rm", arg.name),
            other => panic!("{line} parsed as {other:?}"),
        };
        assert_eq!((kind, name.as_str()), (expected, "lab"));
    }
}

#[test]
fn compose_options_before_or_after_the_subcommand() {
    let Command::Compose(args) =
        parse("vmr compose -f stack.yaml -p shop --allow-outside-files up").command
    else {
        panic!("compose");
    };
    assert_eq!(args.file, Some(PathBuf::from("stack.yaml")));
    assert_eq!(args.project.as_deref(), Some("shop"));
    assert!(args.allow_outside_files);
    assert_eq!(args.command, ComposeCommand::Up);

    let Command::Compose(args) = parse("vmr compose down -f stack.yaml").command else {
        panic!("compose");
    };
    assert_eq!(args.file, Some(PathBuf::from("stack.yaml")));
    assert!(!args.allow_outside_files);
    assert_eq!(args.command, ComposeCommand::Down);

    for (line, expected) in [
        ("vmr compose ps", ComposeCommand::Ps),
        ("vmr compose config", ComposeCommand::Config),
    ] {
        let Command::Compose(args) = parse(line).command else {
            panic!("compose")
        };
        assert_eq!(args.command, expected);
        assert_eq!(args.file, None);
    }
    refuse("vmr compose");
}

#[test]
fn context_commands() {
    let line = "vmr context create lab --registry-url http://127.0.0.1:5000 \
                --auth-url http://127.0.0.1:5005 --insecure";
    let Command::Context(ContextCommand::Create(args)) = parse(line).command else {
        panic!("context create");
    };
    assert_eq!(args.name, "lab");
    assert_eq!(args.registry_url, "http://127.0.0.1:5000");
    assert_eq!(args.auth_url.as_deref(), Some("http://127.0.0.1:5005"));
    assert!(args.insecure);
    refuse("vmr context create lab");

    assert!(matches!(
        parse("vmr context ls").command,
        Command::Context(ContextCommand::Ls)
    ));
    let Command::Context(ContextCommand::Use(arg)) = parse("vmr context use lab").command else {
        panic!("use");
    };
    assert_eq!(arg.name, "lab");
    assert!(matches!(
        parse("vmr context rm lab").command,
        Command::Context(ContextCommand::Rm(_))
    ));
    let Command::Context(ContextCommand::Inspect(arg)) = parse("vmr context inspect").command
    else {
        panic!("inspect");
    };
    assert_eq!(arg.name, None);
    // `--context` the flag and `context` the command do not clash.
    let cli = parse("vmr --context lab context inspect lab");
    assert_eq!(cli.global.context.as_deref(), Some("lab"));
}

#[test]
fn the_definitions_are_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn exec_takes_its_flags_before_the_command_and_the_command_whole() {
    for line in [
        "vmr exec -i web -- sh -c exit",
        "vmr exec web -i -- sh -c exit",
    ] {
        let Command::Exec(args) = parse(line).command else {
            panic!("exec");
        };
        assert!(args.interactive, "{line}");
        assert_eq!(args.name, "web");
        assert_eq!(args.command, ["sh", "-c", "exit"]);
    }
    // After the command's first word, flags are the command's.
    let Command::Exec(args) = parse("vmr exec web ls -i -o json").command else {
        panic!("exec");
    };
    assert!(!args.interactive);
    assert_eq!(args.command, ["ls", "-i", "-o", "json"]);
    let Command::Exec(args) = parse("vmr exec web").command else {
        panic!("exec");
    };
    assert!(
        args.command.is_empty(),
        "the daemon names the empty command"
    );
}

#[test]
fn logs_console_and_the_compose_ways_in() {
    let Command::Logs(args) = parse("vmr logs -f --tail 5 web").command else {
        panic!("logs");
    };
    assert!(args.follow);
    assert_eq!(args.tail, Some(5));
    assert_eq!(args.name, "web");
    refuse("vmr logs --tail many web");
    let Command::Console(args) = parse("vmr console web").command else {
        panic!("console");
    };
    assert_eq!(args.name, "web");
    let Command::Compose(args) = parse("vmr compose logs --follow db").command else {
        panic!("compose");
    };
    let ComposeCommand::Logs(logs) = args.command else {
        panic!("compose logs");
    };
    assert_eq!(logs.service.as_deref(), Some("db"));
    assert!(logs.follow);
    let Command::Compose(args) = parse("vmr compose exec db -- cat /etc/hostname").command else {
        panic!("compose");
    };
    let ComposeCommand::Exec(exec) = args.command else {
        panic!("compose exec");
    };
    assert_eq!(exec.name, "db");
    assert_eq!(exec.command, ["cat", "/etc/hostname"]);
    let Command::Compose(args) = parse("vmr compose ssh db --user debian -- id").command else {
        panic!("compose");
    };
    let ComposeCommand::Ssh(ssh) = args.command else {
        panic!("compose ssh");
    };
    assert_eq!(ssh.name, "db");
    assert_eq!(ssh.user.as_deref(), Some("debian"));
    assert_eq!(ssh.command, ["id"]);
}
