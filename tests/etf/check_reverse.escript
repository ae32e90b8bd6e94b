#!/usr/bin/env escript
%% -*- erlang -*-
%% erl's verdict on terms Kiln built and encoded: each encoding must decode
%% to a term =:= the value of the Erlang expression written next to it.
%%
%% Record format: ExpLen:32, Expression (UTF-8), Len:32, Bytes.
%% Expressions may use pid(Node, Id, Serial, Creation), port(Node, Id,
%% Creation) and ref(Node, Creation, Words) for identifiers of another node,
%% which these helpers build from bytes written here, independently of Kiln.
-mode(compile).

main([In]) ->
    {ok, Bin} = file:read_file(In),
    {N, Bad} = check(Bin, 0, 0),
    io:format("erl checked ~b Kiln-built terms: ~b as expected, ~b wrong~n", [N, N - Bad, Bad]),
    case {N, Bad} of
        {0, _} -> io:format(standard_error, "no records in ~s~n", [In]), halt(1);
        {_, 0} -> halt(0);
        _ -> halt(1)
    end;
main(_) ->
    io:format(standard_error, "usage: check_reverse.escript OUT.bin~n", []),
    halt(2).

check(<<>>, N, Bad) -> {N, Bad};
check(<<EL:32, Exp:EL/binary, L:32, Bytes:L/binary, Rest/binary>>, N, Bad) ->
    Src = unicode:characters_to_list(Exp),
    Want = eval(Src),
    Ok = try binary_to_term(Bytes) of
             Got when Got =:= Want -> true;
             Got -> io:format("  ~ts: got ~P~n", [Src, Got, 20]), false
         catch C:E -> io:format("  ~ts: erl cannot decode Kiln's bytes ~w: ~p:~p~n", [Src, Bytes, C, E]), false
         end,
    check(Rest, N + 1, case Ok of true -> Bad; false -> Bad + 1 end).

eval(Src) ->
    {ok, Toks, _} = erl_scan:string(Src ++ "."),
    {ok, Exprs} = erl_parse:parse_exprs(Toks),
    {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings(), {value, fun local/2}),
    V.

local(pid, [Node, Id, Serial, Cre]) ->
    binary_to_term(<<131, 88, (atom(Node))/binary, Id:32, Serial:32, Cre:32>>);
local(port, [Node, Id, Cre]) when Id > 16#FFFFFFF ->
    binary_to_term(<<131, 120, (atom(Node))/binary, Id:64, Cre:32>>);
local(port, [Node, Id, Cre]) ->
    binary_to_term(<<131, 89, (atom(Node))/binary, Id:32, Cre:32>>);
local(ref, [Node, Cre, Words]) ->
    binary_to_term(<<131, 90, (length(Words)):16, (atom(Node))/binary, Cre:32,
                     << <<W:32>> || W <- Words >>/binary>>).

atom(A) ->
    B = atom_to_binary(A, utf8),
    <<119, (byte_size(B)), B/binary>>.
