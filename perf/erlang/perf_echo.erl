%% The server side of the call scenarios: a gen_server that answers every
%% call with the request itself, the same echo the Kiln side runs.
-module(perf_echo).
-behaviour(gen_server).

-export([init/1, handle_call/3, handle_cast/2]).

init([]) -> {ok, nostate}.

handle_call(Request, _From, State) -> {reply, Request, State}.

handle_cast(_Msg, State) -> {noreply, State}.
