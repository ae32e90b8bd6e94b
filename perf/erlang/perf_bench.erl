%% The Erlang half of Kiln's benchmarks: the same scenarios as
%% perf/kiln_bench.c, driven by perf/run.
%%
%%   erl -noshell +P 2000000 -pa DIR -run perf_bench main SCENARIO full|quick REPS
%%
%% prints one line per timed repetition, which perf/run parses:
%%
%%   RESULT <scenario> <unit> <value>
%%
%% and optional "INFO <scenario> <text>" lines for humans. Exit status 0 on
%% success; on failure an "ERROR" line on stderr and status 1.
-module(perf_bench).

-export([main/1, serve/0]).


-define(PAR_PAIRS, 30).
-define(RING_SIZE, 1000).
-define(SPAWN_FULL, 1000000).
-define(SPAWN_QUICK, 100000).
%% One-way senders outrun their receivers, so every message sent may sit in
%% a queue at once: cap the count to keep memory bounded.
-define(ONEWAY_MAX, 10000000).
%% Across a socket: a lower cap (as in kiln_bench.c).
-define(ONEWAY_REMOTE_MAX, 5000000).
%% tcp_pingpong's and tcp_echo_1mb's message sizes.
-define(TCP_MSG, 64).
-define(TCP_BIG, 1048576).

main([Scenario, Mode, RepsS]) ->
    main([Scenario, Mode, RepsS, none]);
main([Scenario, Mode, RepsS, Peer]) ->
    %% Peer: the server node of the *_remote scenarios (this node must have
    %% been started with -sname and the server's cookie).
    Cfg = #{quick => Mode =:= "quick", reps => list_to_integer(RepsS),
            peer => case Peer of none -> none; _ -> list_to_atom(Peer) end},
    %% A fresh process does the work: -run evaluates in a process we do not
    %% own, and this keeps the benchmark's heap separate from init's.
    {Pid, Ref} = spawn_monitor(fun() -> exit({done, run(Scenario, Cfg)}) end),
    receive
        {'DOWN', Ref, process, Pid, {done, ok}} ->
            halt(0);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format(standard_error, "ERROR ~s: ~p~n", [Scenario, Reason]),
            halt(1)
    end;
main(Args) ->
    io:format(standard_error, "usage: perf_bench SCENARIO full|quick REPS (got ~p)~n", [Args]),
    halt(2).

run("call_seq_local_number", Cfg) -> call_seq_local("call_seq_local_number", fun req_number/0, Cfg);
run("call_seq_local_string", Cfg) -> call_seq_local("call_seq_local_string", fun req_string/0, Cfg);
run("call_seq_local_pid", Cfg) -> call_seq_local("call_seq_local_pid", fun req_pid/0, Cfg);
run("call_seq_local_binary_1mb", Cfg) ->
    call_seq_local("call_seq_local_binary_1mb", fun req_binary/0, Cfg);
run("call_par_local", Cfg) ->
    Servers = [element(2, {ok, _} = gen_server:start(perf_echo, [], []))
               || _ <- lists:seq(1, ?PAR_PAIRS)],
    call_par("call_par_local", Servers, Cfg);
%% The local gen_server call is call_seq_local_number under its own name:
%% in Erlang every call here is a gen_server call.
run("gen_server_call_local", Cfg) ->
    call_seq_local("gen_server_call_local", fun req_number/0, Cfg);
run("tcp_pingpong", Cfg) -> tcp_echo_bench("tcp_pingpong", ?TCP_MSG, 1000, Cfg);
run("tcp_echo_1mb", Cfg) -> tcp_echo_bench("tcp_echo_1mb", ?TCP_BIG, 10, Cfg);
%% Remote calls start at 100 calls, 10 for the megabyte.
run("call_seq_remote_number", Cfg) ->
    call_seq("call_seq_remote_number", fun req_number/0, remote_echo(Cfg), 100, Cfg);
run("call_seq_remote_string", Cfg) ->
    call_seq("call_seq_remote_string", fun req_string/0, remote_echo(Cfg), 100, Cfg);
run("call_seq_remote_pid", Cfg) ->
    call_seq("call_seq_remote_pid", fun req_pid/0, remote_echo(Cfg), 100, Cfg);
run("call_seq_remote_binary_1mb", Cfg) ->
    call_seq("call_seq_remote_binary_1mb", fun req_binary/0, remote_echo(Cfg), 10, Cfg);
run("call_par_remote", Cfg) ->
    {servers, _, Pars, _, _} = remote_servers(Cfg),
    call_par("call_par_remote", Pars, Cfg);
run("oneway_remote_1to1", Cfg) -> oneway_remote("oneway_remote_1to1", 1, Cfg);
run("oneway_remote_2to2", Cfg) -> oneway_remote("oneway_remote_2to2", 2, Cfg);
%% The server's gen_server (Kiln's kiln_gen_server or perf_echo).
run("gen_server_call_remote", Cfg) ->
    {servers, _, _, _, Gs} = remote_servers(Cfg),
    call_seq("gen_server_call_remote", fun req_number/0, Gs, 100, Cfg);
run("oneway_local_1to1", Cfg) -> oneway("oneway_local_1to1", 1, Cfg);
run("oneway_local_2to2", Cfg) -> oneway("oneway_local_2to2", 2, Cfg);
run("spawn_1m", Cfg) -> spawn_bench(Cfg);
run("mem_per_process", Cfg) -> mem_bench(Cfg);
run("ring", Cfg) -> ring(Cfg);
run("etf_encode", Cfg) -> etf_encode(Cfg);
run("etf_decode", Cfg) -> etf_decode(Cfg);
run(Other, _Cfg) -> {unknown_scenario, Other}.

%% ---- helpers ----

now_ns() -> erlang:monotonic_time(nanosecond).

report(Scenario, Unit, Value) ->
    io:format("RESULT ~s ~s ~.3f~n", [Scenario, Unit, float(Value)]).

info(Scenario, Fmt, Args) ->
    io:format("INFO ~s " ++ Fmt ++ "~n", [Scenario | Args]).

%% A probe run must last this long before its rate is trusted; the timed
%% runs are then sized to last about target_ns each.
probe_ns(#{quick := true}) -> 10000000;
probe_ns(_) -> 100000000.
target_ns(#{quick := true}) -> 50000000;
target_ns(_) -> 600000000.

%% Run(N) performs N units of work and returns the elapsed ns. Doubling from
%% Min doubles as the warm-up; the result is the N for the timed runs.
calibrate(Run, Min, Max, Cfg) ->
    calibrate(Run, Min, Min, Max, probe_ns(Cfg), target_ns(Cfg)).

calibrate(Run, N, Min, Max, Probe, Target) ->
    T = max(Run(N), 1),
    if
        T >= Probe; N >= Max ->
            min(Max, max(Min, ceil(N * Target / T)));
        true ->
            calibrate(Run, min(Max, N * 2), Min, Max, Probe, Target)
    end.

repeat(Reps, Fun) -> lists:foreach(fun(_) -> Fun() end, lists:seq(1, Reps)).

%% ---- call_seq_*: one client, one gen_server, sequential calls ----

req_number() -> 12345.
req_string() -> "hello world".
req_pid() -> self().
%% binary:copy makes a refcounted off-heap binary, as a 1 MB binary built at
%% run time would be; local sends share it, they do not copy it.
req_binary() -> binary:copy(<<0>>, 1048576).

call_seq_local(Name, MakeReq, Cfg) ->
    {ok, Server} = gen_server:start(perf_echo, [], []),
    call_seq(Name, MakeReq, Server, 1000, Cfg),
    gen_server:stop(Server).

%% Min: the first probe run's calls.
call_seq(Name, MakeReq, Server, Min, Cfg = #{reps := Reps}) ->
    Req = MakeReq(),
    Req = gen_server:call(Server, Req), % the echo really echoes
    Run = fun(N) ->
                  T0 = now_ns(),
                  call_loop(Server, Req, N),
                  now_ns() - T0
          end,
    N = calibrate(Run, Min, 100000000, Cfg),
    info(Name, "calls_per_run=~b", [N]),
    repeat(Reps, fun() -> report(Name, "ns/call", Run(N) / N) end),
    ok.

call_loop(_Server, _Req, 0) -> ok;
call_loop(Server, Req, N) ->
    _ = gen_server:call(Server, Req, infinity),
    call_loop(Server, Req, N - 1).

%% ---- call_par_*: 30 client/server pairs calling at once ----

call_par(Name, Servers, Cfg = #{reps := Reps}) ->
    Main = self(),
    Clients = [spawn_link(fun() -> par_client(Main, S) end) || S <- Servers],
    Run = fun(N) ->
                  T0 = now_ns(),
                  [C ! {go, N} || C <- Clients],
                  [receive {done, C} -> ok end || C <- Clients],
                  now_ns() - T0
          end,
    N = calibrate(Run, 100, 10000000, Cfg),
    info(Name, "pairs=~b calls_per_client=~b", [?PAR_PAIRS, N]),
    repeat(Reps, fun() ->
                         report(Name, "ns/call", Run(N) / (N * ?PAR_PAIRS))
                 end),
    [begin unlink(C), exit(C, kill) end || C <- Clients],
    ok.

par_client(Main, Server) ->
    receive
        {go, N} ->
            call_loop(Server, ping, N),
            Main ! {done, self()},
            par_client(Main, Server)
    end.

%% ---- oneway_local_*: fire-and-forget sends, Pairs senders each to its own
%% receiver (ergo's local 1-1 and N-N ping); timed until every receiver has
%% counted all its messages. ----

oneway(Name, Pairs, Cfg = #{reps := Reps}) ->
    Main = self(),
    Receivers = [spawn_link(fun() -> oneway_receiver(Main) end) || _ <- lists:seq(1, Pairs)],
    Run = fun(N) ->
                  %% The receiver must know N before the first message lands.
                  [R ! {expect, N} || R <- Receivers],
                  [receive {ready, R} -> ok end || R <- Receivers],
                  T0 = now_ns(),
                  [spawn(fun() -> send_loop(R, N) end) || R <- Receivers],
                  [receive {done, R} -> ok end || R <- Receivers],
                  now_ns() - T0
          end,
    N = calibrate(Run, 10000, ?ONEWAY_MAX, Cfg),
    info(Name, "pairs=~b msgs_per_sender=~b", [Pairs, N]),
    repeat(Reps, fun() ->
                         T = Run(N),
                         report(Name, "msgs/s", N * Pairs * 1.0e9 / T)
                 end),
    [begin unlink(R), exit(R, kill) end || R <- Receivers],
    ok.

oneway_receiver(Main) ->
    receive
        {expect, N} ->
            Main ! {ready, self()},
            count(N),
            Main ! {done, self()},
            oneway_receiver(Main)
    end.

count(0) -> ok;
count(N) -> receive _ -> count(N - 1) end.

send_loop(_To, 0) -> ok;
send_loop(To, N) ->
    To ! 1,
    send_loop(To, N - 1).

%% ---- spawn_1m: spawn idle processes; timed until the last one has run ----

spawn_count(#{quick := true}) -> ?SPAWN_QUICK;
spawn_count(_) -> ?SPAWN_FULL.

spawn_bench(Cfg = #{reps := Reps}) ->
    N = spawn_count(Cfg),
    %% Warm the allocators and the process table with a small batch first.
    Base = erlang:system_info(process_count),
    _ = spawn_idle_counted(10000),
    stop_all_idle(Base),
    repeat_cleanup(Reps, fun() ->
                                 {T0, T1, _} = spawn_idle_counted(N),
                                 report("spawn_1m", "ns/spawn", (T1 - T0) / N),
                                 info("spawn_1m", "alive=~b",
                                      [erlang:system_info(process_count) - Base])
                         end, Base),
    ok.

%% Like repeat/2, but kills the idle processes between repetitions (not
%% after the last: halt does that for free). perf/run runs these scenarios
%% in a fresh VM per repetition anyway, so this is for manual runs.
repeat_cleanup(1, Fun, _Base) -> Fun();
repeat_cleanup(Reps, Fun, Base) ->
    Fun(),
    stop_all_idle(Base),
    repeat_cleanup(Reps - 1, Fun, Base).

%% Spawns N idle processes; each bumps a shared counter and waits for
%% 'stop', and the one that brings the counter to N reports the time, so the
%% clock stops when every process has run and the spawn loop has ended (as
%% on the Kiln side). The spawner is a process, as in Kiln's benchmark.
%% Returns {T0, TEnd, Last} with Last the pid of the process that started
%% last.
spawn_idle_counted(N) ->
    Main = self(),
    A = atomics:new(1, []),
    T0 = now_ns(),
    counted_n(N, N, A, Main),
    TLoop = now_ns(),
    receive {all_started, TLast, Last} -> {T0, max(TLast, TLoop), Last} end.

counted_n(0, _N, _A, _Main) -> ok;
counted_n(K, N, A, Main) ->
    spawn(fun() -> counted_idle(N, A, Main) end),
    counted_n(K - 1, N, A, Main).

counted_idle(N, A, Main) ->
    case atomics:add_get(A, 1, 1) of
        N -> Main ! {all_started, now_ns(), self()};
        _ -> ok
    end,
    receive stop -> ok end.

%% Kills every process beyond the Before count that this benchmark made and
%% waits until they are gone, so the next repetition starts from scratch.
stop_all_idle(Before) ->
    [exit(P, kill) || P <- processes(), is_idle(P)],
    wait_count(Before).

is_idle(P) ->
    case process_info(P, current_function) of
        {current_function, {?MODULE, counted_idle, 3}} -> true;
        %% 'undefined' (it died meanwhile) and every other process
        _ -> false
    end.

wait_count(Before) ->
    case erlang:system_info(process_count) > Before of
        true -> timer:sleep(5), wait_count(Before);
        false -> ok
    end.

%% ---- mem_per_process: RSS growth per idle process ----

%% Resident set size of this OS process, from /proc/self/statm (the same
%% source the Kiln side reads).
rss_bytes(PageSize) ->
    {ok, Bin} = file:read_file("/proc/self/statm"),
    [_Size, Resident | _] = string:lexemes(binary_to_list(Bin), " \n"),
    list_to_integer(Resident) * PageSize.

%% Erlang has no sysconf; getconf answers on every Linux Kiln runs on.
page_size() ->
    list_to_integer(string:trim(os:cmd("getconf PAGESIZE"))).

%% No warm-up here: the baseline is the VM at rest, so the delta charges
%% the processes with everything they make the VM allocate.
mem_bench(Cfg = #{reps := Reps}) ->
    N = spawn_count(Cfg),
    PageSize = page_size(),
    Base = erlang:system_info(process_count),
    repeat_cleanup(Reps, fun() ->
                                 garbage_collect(),
                                 Rss0 = rss_bytes(PageSize),
                                 Mem0 = erlang:memory(processes),
                                 {_, _, Last} = spawn_idle_counted(N),
                                 Rss1 = rss_bytes(PageSize),
                                 Mem1 = erlang:memory(processes),
                                 report("mem_per_process", "bytes/proc", (Rss1 - Rss0) / N),
                                 {memory, One} = process_info(Last, memory),
                                 info("mem_per_process",
                                      "processes=~b rss_delta=~b "
                                      "memory(processes)_delta_per_proc=~.1f "
                                      "process_info_memory=~b",
                                      [N, Rss1 - Rss0, (Mem1 - Mem0) / N, One])
                         end, Base),
    ok.

%% ---- ring: 1000 processes pass a token round and round ----

ring(Cfg = #{reps := Reps}) ->
    Main = self(),
    Pids = [spawn_link(fun() -> ring_start(Main) end) || _ <- lists:seq(1, ?RING_SIZE)],
    Nexts = tl(Pids) ++ [hd(Pids)],
    [P ! {next, Next} || {P, Next} <- lists:zip(Pids, Nexts)],
    First = hd(Pids),
    Run = fun(Laps) ->
                  Hops = Laps * ?RING_SIZE,
                  T0 = now_ns(),
                  First ! Hops,
                  receive ring_done -> ok end,
                  now_ns() - T0
          end,
    MinLaps = case Cfg of #{quick := true} -> 10; _ -> 1000 end,
    Laps = calibrate(Run, MinLaps, 1000000, Cfg),
    info("ring", "processes=~b laps=~b", [?RING_SIZE, Laps]),
    repeat(Reps, fun() ->
                         report("ring", "ns/hop", Run(Laps) / (Laps * ?RING_SIZE))
                 end),
    [begin unlink(P), exit(P, kill) end || P <- Pids],
    ok.

ring_start(Main) ->
    receive {next, Next} -> ring_loop(Next, Main) end.

ring_loop(Next, Main) ->
    receive
        0 ->
            Main ! ring_done,
            ring_loop(Next, Main);
        H ->
            Next ! H - 1,
            ring_loop(Next, Main)
    end.

%% ---- etf_encode / etf_decode: a mixed corpus through term_to_binary and
%% binary_to_term ----
%%
%% The same corpus as perf/kiln_bench.c (perf/README.md defines it): 1000
%% tuples {ok, I, <<"abc">>}, a 64-key map of 9-byte binaries (1030 bytes of
%% ETF), a list of 200 pids of live processes, a 1 MiB binary. Each term is
%% encoded or decoded on its own; MB/s = ETF bytes (10^6 per MB) per second.

etf_corpus() ->
    Tuples = [{ok, I, <<"abc">>} || I <- lists:seq(0, 999)],
    Map = maps:from_list([{K, binary:copy(<<K>>, 9)} || K <- lists:seq(0, 63)]),
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, 200)],
    %% binary:copy makes one refcounted off-heap binary, as Kiln's is.
    Bin = binary:copy(list_to_binary(lists:seq(0, 255)), 4096),
    Parts = [{"tuples", Tuples}, {"map_1k", [Map]}, {"pids_200", [Pids]},
             {"binary_1mb", [Bin]}],
    %% A codec that loses information would be fast for nothing.
    [T = binary_to_term(term_to_binary(T)) || {_, Ts} <- Parts, T <- Ts],
    Parts.

%% Bytes per part of the flat encodings. perf/run compares this line between
%% the two sides: they must have encoded the same corpus to the same bytes.
etf_info_bytes(Name, Parts) ->
    Sizes = [{P, lists:sum([byte_size(term_to_binary(T)) || T <- Ts])} || {P, Ts} <- Parts],
    info(Name, "etf_bytes=~b~s",
         [lists:sum([S || {_, S} <- Sizes]),
          [io_lib:format(" ~s=~b", [P, S]) || {P, S} <- Sizes]]),
    Sizes.

%% Each(Terms, Acc) runs the operation once over Terms and adds the ETF bytes
%% it handled to Acc. N passes, part by part (so each part's time is known);
%% returns {TotalNs, [{Part, Ns}]}. The byte count is checked, which also
%% keeps the results in use.
etf_run(Each, Parts, Sizes, N) ->
    Times = [begin
                 T0 = now_ns(),
                 Bytes = etf_passes(Each, Ts, N, 0),
                 T = now_ns() - T0,
                 {P, Size} = lists:keyfind(P, 1, Sizes),
                 Bytes = Size * N,
                 {P, T}
             end || {P, Ts} <- Parts],
    {lists:sum([T || {_, T} <- Times]), Times}.

etf_passes(_Each, _Ts, 0, Acc) -> Acc;
etf_passes(Each, Ts, N, Acc) -> etf_passes(Each, Ts, N - 1, Each(Ts, Acc)).

mb_per_s(Bytes, N, Ns) -> Bytes * N * 1.0e3 / max(Ns, 1).

%% Calibrates and times one path; each repetition is a RESULT line when
%% Result (the path in the table), else only INFO lines, the last giving the
%% median of the repetitions.
etf_path(Name, Each, Parts, Sizes, Path, Result, Cfg = #{reps := Reps}) ->
    Total = lists:sum([S || {_, S} <- Sizes]),
    N = calibrate(fun(K) -> element(1, etf_run(Each, Parts, Sizes, K)) end, 1, 1000000, Cfg),
    Vs = [begin
              {T, Times} = etf_run(Each, Parts, Sizes, N),
              V = mb_per_s(Total, N, T),
              info(Name, "path=~s rep=~b passes=~b MB/s: total=~.1f~s",
                   [Path, R, N, V,
                    [io_lib:format(" ~s=~.1f", [P, mb_per_s(S, N, PT)])
                     || {{P, S}, {P, PT}} <- lists:zip(Sizes, Times)]]),
              Result andalso report(Name, "MB/s", V),
              V
          end || R <- lists:seq(1, Reps)],
    info(Name, "path=~s median MB/s=~.1f~s",
         [Path, lists:nth(Reps div 2 + 1, lists:sort(Vs)),
          case Result of true -> " (the table's number)"; false -> " (not in the table)" end]).

t2b_each([], Acc) -> Acc;
t2b_each([T | Ts], Acc) -> t2b_each(Ts, Acc + byte_size(term_to_binary(T))).

%% term_to_iovec (OTP 23+) references large refcounted binaries instead of
%% copying them, as Kiln's iovec path does: shown for comparison only.
iov_each([], Acc) -> Acc;
iov_each([T | Ts], Acc) -> iov_each(Ts, Acc + iolist_size(erlang:term_to_iovec(T))).

b2t_each([], Acc) -> Acc;
b2t_each([B | Bs], Acc) ->
    _ = binary_to_term(B),
    b2t_each(Bs, Acc + byte_size(B)).

etf_stop(Parts) ->
    {_, [Pids]} = lists:keyfind("pids_200", 1, Parts),
    [P ! stop || P <- Pids],
    ok.

etf_encode(Cfg) ->
    Parts = etf_corpus(),
    Sizes = etf_info_bytes("etf_encode", Parts),
    etf_path("etf_encode", fun t2b_each/2, Parts, Sizes, "term_to_binary", true, Cfg),
    etf_path("etf_encode", fun iov_each/2, Parts, Sizes, "term_to_iovec", false, Cfg),
    etf_stop(Parts).

etf_decode(Cfg) ->
    Parts = etf_corpus(),
    Sizes = etf_info_bytes("etf_decode", Parts),
    %% Decode what term_to_binary made, one binary per term.
    Encoded = [{P, [term_to_binary(T) || T <- Ts]} || {P, Ts} <- Parts],
    etf_path("etf_decode", fun b2t_each/2, Encoded, Sizes, "binary_to_term", true, Cfg),
    etf_stop(Parts).

%% ---- tcp_pingpong and tcp_echo_1mb: a message to an echo over loopback TCP and back ----
%%
%% The Kiln side is the floor for remote calls (plain C, the echo in another
%% OS process); this is gen_tcp doing the same, the echo in this VM.
%% tcp_pingpong sends 64 bytes, tcp_echo_1mb a megabyte (read whole before
%% it is sent back).

tcp_echo_bench(Name, Size, Min, Cfg = #{reps := Reps}) ->
    Opts = [binary, {active, false}, {nodelay, true}],
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}} | Opts]),
    {ok, Port} = inet:port(L),
    spawn_link(fun() -> {ok, S} = gen_tcp:accept(L), tcp_echo(S, Size) end),
    {ok, C} = gen_tcp:connect({127, 0, 0, 1}, Port, Opts),
    Msg = binary:copy(<<1>>, Size),
    Run = fun(N) ->
                  T0 = now_ns(),
                  tcp_loop(C, Msg, Size, N),
                  now_ns() - T0
          end,
    N = calibrate(Run, Min, 100000000, Cfg),
    info(Name, "message_bytes=~b round_trips_per_run=~b", [Size, N]),
    repeat(Reps, fun() -> report(Name, "ns/rt", Run(N) / N) end),
    gen_tcp:close(C),
    ok.

tcp_loop(_C, _Msg, _Size, 0) -> ok;
tcp_loop(C, Msg, Size, N) ->
    ok = gen_tcp:send(C, Msg),
    {ok, _} = gen_tcp:recv(C, Size),
    tcp_loop(C, Msg, Size, N - 1).

tcp_echo(S, Size) ->
    case gen_tcp:recv(S, Size) of
        {ok, B} -> ok = gen_tcp:send(S, B), tcp_echo(S, Size);
        {error, closed} -> ok
    end.

%% ---- distribution: the server node and the *_remote clients ----
%%
%% erl -sname NAME -setcookie C -run perf_bench serve starts, for whatever
%% client connects, the same set as kiln_bench --serve: an echo gen_server
%% for call_seq_remote_*, PAR_PAIRS more for call_par_remote, two one-way
%% receivers, a gen_server for gen_server_call_remote, and perf_ctl, which
%% answers {hello, From} with {servers, Echo, [Par], [Receivers], Gs}. It
%% prints "READY <node>" and runs until the VM is stopped.

serve() ->
    Start = fun() -> {ok, P} = gen_server:start(perf_echo, [], []), P end,
    Echo = Start(),
    Pars = [Start() || _ <- lists:seq(1, ?PAR_PAIRS)],
    Receivers = [spawn(fun remote_receiver/0) || _ <- [1, 2]],
    Gs = Start(),
    Reply = {servers, Echo, Pars, Receivers, Gs},
    true = register(perf_ctl, spawn(fun() -> ctl_loop(Reply) end)),
    io:format("READY ~s~n", [node()]).

ctl_loop(Reply) ->
    receive
        {hello, From} -> From ! Reply
    end,
    ctl_loop(Reply).

%% A one-way receiver for remote senders: {expect, N, From} answers
%% {ready, self()}, then after N more messages {done, self()} goes to From.
remote_receiver() ->
    receive
        {expect, N, From} ->
            From ! {ready, self()},
            count(N),
            From ! {done, self()},
            remote_receiver()
    end.

remote_servers(#{peer := Peer}) ->
    case net_kernel:connect_node(Peer) of
        true -> ok;
        Other -> exit({connect_node, Peer, Other})
    end,
    {perf_ctl, Peer} ! {hello, self()},
    receive
        {servers, _, _, _, _} = S -> S
    after 10000 -> exit({no_servers_reply, Peer})
    end.

remote_echo(Cfg) -> element(2, remote_servers(Cfg)).

%% The local one-way scenario with the receivers on the server node.
oneway_remote(Name, Pairs, Cfg = #{reps := Reps}) ->
    {servers, _, _, AllReceivers, _} = remote_servers(Cfg),
    Receivers = lists:sublist(AllReceivers, Pairs),
    Run = fun(N) ->
                  [R ! {expect, N, self()} || R <- Receivers],
                  [receive {ready, R} -> ok after 10000 -> exit(no_ready) end
                   || R <- Receivers],
                  T0 = now_ns(),
                  [spawn(fun() -> send_loop(R, N) end) || R <- Receivers],
                  [receive {done, R} -> ok after 120000 -> exit(receiver_not_done) end
                   || R <- Receivers],
                  now_ns() - T0
          end,
    N = calibrate(Run, 10000, ?ONEWAY_REMOTE_MAX, Cfg),
    info(Name, "pairs=~b msgs_per_sender=~b", [Pairs, N]),
    repeat(Reps, fun() -> report(Name, "msgs/s", N * Pairs * 1.0e9 / Run(N)) end),
    ok.
