#!/usr/bin/env escript
%%! -sname demo_client -setcookie kiln
%% The Erlang side of the demo: a real erl node that talks to kiln-node.
%% Run by scripts/demo.sh as: demo_client.escript KilnNode
%% (escript reads the %%! line only on the 2nd or 3rd line)
main([NodeStr]) ->
    Node = list_to_atom(NodeStr),
    step("ping", fun() -> pong = net_adm:ping(Node) end),
    step("echo call", fun() -> {hello, [1, 2, 3]} = gen_server:call({echo, Node}, {hello, [1, 2, 3]}) end),
    step("echo message", fun() ->
        {echo, Node} ! {self(), plain},
        receive {EchoPid, plain} when node(EchoPid) =:= Node -> ok after 3000 -> exit(no_echo) end
    end),
    step("counter: 5 casts and a call", fun() ->
        [gen_server:cast({counter, Node}, incr) || _ <- lists:seq(1, 5)],
        6 = gen_server:call({counter, Node}, incr),
        6 = gen_server:call({counter, Node}, get)
    end),
    step("counter crash and restart", fun() ->
        {'EXIT', {crash_requested, _}} = (catch gen_server:call({counter, Node}, crash)),
        0 = wait_restarted(Node, 50)
    end),
    step("rpc kiln:info()", fun() ->
        Info = rpc:call(Node, kiln, info, []),
        true = is_map(Info),
        io:format("      ~p~n", [Info])
    end),
    N = 20000,
    {Us, _} = timer:tc(fun() -> calls(Node, N) end),
    {UsLocal, _} = timer:tc(fun() -> local_calls(N) end),
    io:format("~nthroughput: ~b sequential gen_server:call round trips to ~s: ~.1f us each (~b calls/s)~n",
              [N, Node, Us / N, round(N * 1000000 / Us)]),
    io:format("            the same calls to a gen_server inside this erl node: ~.1f us each~n", [UsLocal / N]),
    io:format("demo: all steps passed~n"),
    halt(0);
main(_) ->
    io:format("usage: demo_client.escript KilnNode~n"),
    halt(2).

step(Name, F) ->
    try F() of
        _ -> io:format("  ok  ~s~n", [Name])
    catch C:E:St ->
        io:format("  FAILED  ~s: ~p:~p~n  ~p~n", [Name, C, E, St]),
        halt(1)
    end.

wait_restarted(_Node, 0) -> exit(not_restarted);
wait_restarted(Node, Tries) ->
    case catch gen_server:call({counter, Node}, get, 1000) of
        V when is_integer(V) -> V;
        _ -> timer:sleep(100), wait_restarted(Node, Tries - 1)
    end.

calls(_Node, 0) -> ok;
calls(Node, K) -> K = gen_server:call({echo, Node}, K), calls(Node, K - 1).

%% A gen_server written inline (no module needed in an escript): the
%% same call protocol, for comparison.
local_calls(N) ->
    Srv = spawn(fun Loop() -> receive {'$gen_call', From, X} -> gen:reply(From, X), Loop() end end),
    lists:foreach(fun(K) -> K = gen_server:call(Srv, K) end, lists:seq(1, N)),
    exit(Srv, kill).
