# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ntpd_host_global_optspecs
    string join \n c/config= l/log-level= runtime-dir= h/help V/version
end

function __fish_ntpd_host_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ntpd_host_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ntpd_host_using_subcommand
    set -l cmd (__fish_ntpd_host_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -s V -l version -d 'Print version'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "run" -d 'Run ntpd-rs with the plugin sources (the default)'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "bridge" -d 'Run only the plugin workers, feeding a separately installed ntpd-rs through the `socket` each plugin source names'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "validate" -d 'Check a config without starting anything'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "status" -d 'Show the daemon\'s sources joined with each plugin worker\'s state'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "metrics" -d 'Serve the host\'s and the daemon\'s metrics (OpenMetrics) over HTTP, like ntpd-rs\'s `ntp-metrics-exporter`: a process of its own that reads the status socket on each scrape of /metrics'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "probe" -d 'Load a plugin, print its info and capabilities, take samples'
complete -c ntpd-host -n "__fish_ntpd_host_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand run" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand run" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand run" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand bridge" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand bridge" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand bridge" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand bridge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand validate" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand validate" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand validate" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand validate" -l bridge -d 'Check it as a `bridge` config (plugin sources with sockets only)'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand status" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand status" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand status" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand status" -l json -d 'Print one JSON document'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand metrics" -s c -l config -d 'The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand metrics" -s l -l log-level -d 'Log level' -r -f -a "trace\t'Everything'
debug\t'Debugging detail'
info\t'Normal operation'
warn\t'Problems that are handled'
error\t'Failures'"
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand metrics" -l runtime-dir -d 'Directory for the sockets, the derived ntpd-rs config and the status socket [default: /run/ntpd-host]' -r -F
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand metrics" -l listen -d 'Listen on this address, overriding `metrics-listen` of the config (the config is then not read) [default: 127.0.0.1:9976]' -r
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand metrics" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -l config -d 'The plugin\'s configuration: JSON text, or @FILE to read it from a file' -r
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -l count -d 'Number of samples to take' -r
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -l interval -d 'Seconds between samples' -r
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -l json -d 'Print one JSON object per line (info, capabilities, samples, summary)'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -l allow-insecure-plugin -d 'Load the plugin even if someone other than root or you could modify it'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand probe" -s h -l help -d 'Print help'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "run" -d 'Run ntpd-rs with the plugin sources (the default)'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "bridge" -d 'Run only the plugin workers, feeding a separately installed ntpd-rs through the `socket` each plugin source names'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "validate" -d 'Check a config without starting anything'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "status" -d 'Show the daemon\'s sources joined with each plugin worker\'s state'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "metrics" -d 'Serve the host\'s and the daemon\'s metrics (OpenMetrics) over HTTP, like ntpd-rs\'s `ntp-metrics-exporter`: a process of its own that reads the status socket on each scrape of /metrics'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "probe" -d 'Load a plugin, print its info and capabilities, take samples'
complete -c ntpd-host -n "__fish_ntpd_host_using_subcommand help; and not __fish_seen_subcommand_from run bridge validate status metrics probe help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
