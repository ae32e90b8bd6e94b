#!/usr/bin/env escript
%% -*- erlang -*-
%% Writes term_to_binary output of the real node for the ETF corpus.
%%
%% Record format (all integers big-endian):
%%   NameLen:16, Name, Canon:8, Minor:8, Compressed:8/signed, Len:32, Bytes
%% Canon = 1: Kiln must re-encode Bytes byte for byte (with the same Minor and
%% Compressed options); 0: OTP's bytes are not canonical (hashed maps keep
%% OTP's internal order), so erl checks Kiln's encoding with =:= instead.
%% Compressed: 0 none, -1 [compressed], N {compressed, N}.
%%
%% Usage: gen_corpus.escript OUT.bin [SEED_DIR]
%% With SEED_DIR, every encoding is also written there as its own file
%% (the fuzzer's seed corpus, with fuzz_etf_decode's mode byte in front).
-mode(compile).

main([Out]) -> main([Out, none]);
main([Out, SeedDir]) ->
    Terms = terms(),
    Recs = lists:flatmap(fun record/1, Terms),
    ok = file:write_file(Out, [R || {R, _} <- Recs]),
    case SeedDir of
        none -> ok;
        _ ->
            ok = filelib:ensure_dir(filename:join(SeedDir, "x")),
            %% The fuzz target reads a mode byte first: 0 = whole term,
            %% 2 = bare term (no 131, as in a distribution header).
            Seeds = lists:flatmap(fun({_, <<131, 80, _/binary>> = B}) -> [<<0, B/binary>>];
                                     ({_, <<131, T/binary>> = B}) -> [<<0, B/binary>>, <<2, T/binary>>]
                                  end, Recs),
            lists:foldl(fun(B, I) ->
                                F = filename:join(SeedDir, io_lib:format("seed_~4..0B", [I])),
                                ok = file:write_file(F, B),
                                I + 1
                        end, 0, Seeds)
    end,
    io:format("wrote ~b corpus terms to ~s~n", [length(Recs), Out]);
main(_) ->
    io:format(standard_error, "usage: gen_corpus.escript OUT.bin [SEED_DIR]~n", []),
    halt(2).

record({Name, Term, Opts, Canon}) ->
    Bytes = term_to_binary(Term, Opts),
    %% The corpus is only useful if it says what it claims to.
    Term = binary_to_term(Bytes),
    Minor = proplists:get_value(minor_version, Opts, 1),
    Comp = case lists:keyfind(compressed, 1, Opts) of
               {compressed, L} -> L;
               false -> case lists:member(compressed, Opts) of true -> -1; false -> 0 end
           end,
    N = unicode:characters_to_binary(Name),
    [{<<(byte_size(N)):16, N/binary, (bool(Canon)):8, Minor:8, Comp:8/signed,
        (byte_size(Bytes)):32, Bytes/binary>>, Bytes}].

bool(true) -> 1;
bool(false) -> 0.

t(Name, Term) -> {Name, Term, [], true}.
t(Name, Term, Opts) -> {Name, Term, Opts, true}.

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

%% Pids, ports and refs of another node with a 32-bit creation, built from
%% hand-written bytes (a non-distributed node cannot make them otherwise).
node_atom() -> <<119, 11, "kiln@remote">>.
ext_pid(Id, Serial, Cre) -> binary_to_term(<<131, 88, (node_atom())/binary, Id:32, Serial:32, Cre:32>>).
ext_port(Id, Cre) -> binary_to_term(<<131, 89, (node_atom())/binary, Id:32, Cre:32>>).
ext_v4_port(Id, Cre) -> binary_to_term(<<131, 120, (node_atom())/binary, Id:64, Cre:32>>).
ext_ref(Cre, Words) ->
    binary_to_term(<<131, 90, (length(Words)):16, (node_atom())/binary, Cre:32,
                     << <<W:32>> || W <- Words >>/binary>>).

nest_tuple(0, Acc) -> Acc;
nest_tuple(N, Acc) -> nest_tuple(N - 1, {Acc}).
nest_list(0, Acc) -> Acc;
nest_list(N, Acc) -> nest_list(N - 1, [Acc]).
nest_map(0, Acc) -> Acc;
nest_map(N, Acc) -> nest_map(N - 1, #{k => Acc}).

terms() ->
    Bounds = [{"2^27", 1 bsl 27}, {"2^31", 1 bsl 31}, {"2^32", 1 bsl 32}, {"2^59", 1 bsl 59},
              {"2^60", 1 bsl 60}, {"2^63", 1 bsl 63}, {"2^64", 1 bsl 64}, {"2^1000", 1 bsl 1000},
              {"2^2040", 1 bsl 2040}, {"2^2048", 1 bsl 2048}],
    Ints = [t(fmt("int ~s~s~s", [S, B, D]), Sign * V + Delta)
            || {B, V} <- Bounds, {S, Sign} <- [{"", 1}, {"-", -1}],
               {D, Delta} <- [{"-1", -1}, {"", 0}, {"+1", 1}]]
        ++ [t(fmt("int ~b", [I]), I) || I <- [0, 1, 127, 128, 255, 256, -1, -255, -256,
                                               2147483647, -2147483648, 2147483648, -2147483649]],
    Floats = [t(fmt("float ~w", [F]), F)
              || F <- [0.0, -0.0, 1.0, -1.5, 3.141592653589793, 0.1, 1.0e-10, 1.0e308, -1.0e308,
                       1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308,
                       5.0e-324, -5.0e-324, 123456789.123456789, 1.0e15, 1.0e16]]
        ++ [t(fmt("float ~w minor 0", [F]), F, [{minor_version, 0}])
            || F <- [0.0, -0.0, 1.5, -2.5e-300, 1.7976931348623157e308, 0.1]],
    LongLatin = list_to_atom(lists:duplicate(255, $a)),
    LongUml = list_to_atom(lists:duplicate(255, 228)),
    LongCjk = list_to_atom(lists:duplicate(255, 16#65E5)),
    AtomList = [a, '', 'hello world', 'Quoted', true, false, undefined, 'nonode@nohost',
                list_to_atom([228, 246]), list_to_atom([255]), list_to_atom([16#65E5, 16#672C]),
                list_to_atom([16#1F600]), list_to_atom("a" ++ [16#10FFFF]), LongLatin, LongUml, LongCjk],
    Atoms = [t(fmt("atom ~w", [A]), A) || A <- AtomList]
        ++ [t(fmt("atom ~w minor 2", [A]), A, [{minor_version, 2}]) || A <- AtomList],
    Tuples = [t("tuple {}", {}), t("tuple 1", {1}), t("tuple 3", {a, 1, "x"}),
              t("tuple 255", list_to_tuple(lists:seq(1, 255))),
              t("tuple 256", list_to_tuple(lists:seq(1, 256))),
              t("tuple 300 mixed", list_to_tuple([{I, [I]} || I <- lists:seq(1, 300)]))],
    Lists = [t("nil", []), t("string abc", "abc"), t("string bytes", [0, 1, 255]),
             t("list 256", [256]), t("list [1|2]", [1 | 2]), t("list [a|b]", [a | b]),
             t("list [[]]", [[]]), t("list improper float", [1, 2 | 3.0]),
             t("list nested improper", [[1 | 2] | 3]),
             t("list tail binary", [a, "b" | <<"c">>]),
             t("list unicode", [1000, 2000, 16#10FFFF]),
             t("string 65535", lists:duplicate(65535, $a)),
             t("list 65536 bytes", lists:duplicate(65536, $a)),
             t("list 70000", lists:seq(1, 70000)),
             t("list of strings", ["a", "bc", "", "def"]),
             t("list mixed", [1, a, 2.0, <<3>>, {4}, #{5 => 6}, [7], "eight"]),
             t("list string-like improper", [$a, $b | $c]),
             t("empty string in tuple", {""})],
    Big = list_to_binary([I rem 256 || I <- lists:seq(1, 10000)]),
    <<_:3, Unaligned/bits>> = Big,
    Bins = [t("binary empty", <<>>), t("binary 3", <<1, 2, 3>>),
            t("binary 63", binary:part(Big, 0, 63)), t("binary 64", binary:part(Big, 0, 64)),
            t("binary 5000", binary:part(Big, 0, 5000)), t("binary 10000", Big),
            t("sub-binary", binary:part(Big, 3, 10)), t("sub-binary large", binary:part(Big, 100, 6000)),
            t("sub-bitstring unaligned", Unaligned),
            t("sub-bitstring unaligned short", begin <<_:5, R:20/bits, _/bits>> = Big, R end)]
        ++ [t(fmt("bitstring ~b bits", [N]), <<16#5A:N>>) || N <- lists:seq(1, 7)]
        ++ [t(fmt("bitstring 2 bytes + ~b bits", [N]), <<16#AB, 16#CD, 16#FF:N>>) || N <- lists:seq(1, 7)]
        ++ [t(fmt("bitstring 100 bytes + ~b bits", [N]), <<(binary:part(Big, 0, 100))/binary, 1:N>>)
            || N <- [1, 4, 7]]
        ++ [t("bitstring 5000 bytes + 3 bits", <<(binary:part(Big, 0, 5000))/binary, 5:3>>)],
    Maps = [t("map empty", #{}), t("map mixed keys", #{1 => a, 1.0 => b, 2 => c, 0.5 => d, x => 1,
                                                      "s" => 2, {t} => 3, <<"b">> => 4, [] => 5}),
            t("map tuple keys", #{{connection_id, 'c@host'} => 1, {x, y} => []}),
            t("map int-float order", #{3 => a, 0.5 => b, {1} => c, {0.5} => d, {2.0} => e}),
            t("map of maps", #{#{a => 1} => #{}, #{} => x, #{b => [1]} => y}),
            t("map big keys", #{(1 bsl 70) => a, -(1 bsl 70) => b, 0 => c})]
        ++ [{fmt("map ~b int keys", [N]), maps:from_list([{I, I * I} || I <- lists:seq(1, N)]), [], N =< 32}
            || N <- lists:seq(1, 100)]
        ++ [{fmt("map ~b atom keys", [N]),
             maps:from_list([{list_to_atom("k" ++ integer_to_list(I)), I} || I <- lists:seq(1, N)]), [],
             N =< 32}
            || N <- [31, 32, 33, 64, 100]]
        ++ [{fmt("map ~b mixed keys", [N]),
             maps:from_list([{case I rem 4 of 0 -> I; 1 -> float(I); 2 -> {I}; 3 -> integer_to_list(I) end, I}
                             || I <- lists:seq(1, N)]), [], N =< 32}
            || N <- [10, 32, 33, 50, 100]],
    Deep = [t("nested tuples 1000", nest_tuple(1000, leaf)),
            t("nested lists 1000", nest_list(1000, [])),
            t("nested maps 1000", nest_map(1000, #{})),
            t("nested mixed 1000", lists:foldl(fun(I, Acc) -> case I rem 3 of
                                                                  0 -> {Acc, I};
                                                                  1 -> [Acc, I];
                                                                  2 -> #{I => Acc}
                                                              end end, x, lists:seq(1, 1000)))],
    Self = self(),
    Spawned = spawn(fun() -> receive stop -> ok end end),
    Ref = make_ref(),
    Port = hd(erlang:ports()),
    Ids = [t("pid self", Self), t("pid spawned", Spawned),
           t("pid remote creation 0xDEADBEEF", ext_pid(123, 4, 16#DEADBEEF)),
           t("pid remote max", ext_pid(16#FFFFFFFF, 16#FFFFFFFF, 16#FFFFFFFF)),
           t("pid remote serial 2^29", ext_pid(1, 1 bsl 29, 7)),
           t("ref local", Ref), t("ref alias", alias()),
           t("ref remote 3 words", ext_ref(16#DEADBEEF, [1, 2, 3])),
           t("ref remote 1 word", ext_ref(9, [42])),
           t("ref remote 5 words", ext_ref(16#FFFFFFFF, [1, 2, 3, 4, 5])),
           t("ref remote 2 words", ext_ref(4, [16#FFFFFFFF, 0])),
           t("port local", Port),
           t("port remote", ext_port(77, 16#DEADBEEF)),
           t("port remote 2^28-1", ext_port((1 bsl 28) - 1, 5)),
           t("port remote v4", ext_v4_port(1 bsl 40, 16#CAFEBABE)),
           t("port remote v4 2^28", ext_v4_port(1 bsl 28, 3)),
           t("ids in a tuple", {Self, Ref, Port, ext_pid(1, 2, 3)})],
    X = 42,
    L = [1, 2, 3],
    Funs = [t("fun export lists:sum/1", fun lists:sum/1), t("fun export erlang:'+'/2", fun erlang:'+'/2),
            t("fun export utf8", fun 'ä':'ö'/0),
            t("fun local", fun(A) -> A end),
            t("fun closure", fun(A) -> {A, X, L, Self} end),
            t("fun in list", [fun lists:map/2, fun() -> X end])],
    Compressed = [t("compressed list", lists:duplicate(100, 1), [compressed]),
                  t("compressed string", lists:duplicate(1000, $z), [compressed]),
                  t("compressed tiny (stays plain)", a, [compressed]),
                  t("compressed small tuple (stays plain)", {1, 2}, [compressed]),
                  t("compressed random binary (stays plain)", crypto_free_random(), [compressed]),
                  t("compressed level 1", lists:seq(1, 1000), [{compressed, 1}]),
                  t("compressed level 9", lists:seq(1, 1000), [{compressed, 9}]),
                  t("compressed level 0 (plain)", lists:seq(1, 100), [{compressed, 0}]),
                  t("compressed map", maps:from_list([{I, I} || I <- lists:seq(1, 20)]), [compressed]),
                  t("compressed nested", nest_tuple(500, x), [compressed]),
                  t("compressed minor 2", {'ä', 'b', 1.5}, [compressed, {minor_version, 2}]),
                  {"compressed large map", maps:from_list([{I, I} || I <- lists:seq(1, 60)]), [compressed],
                   false}],
    Real = [t("gen_call", {'$gen_call', {Self, [alias | Ref]}, {is_auth, 'erl@host'}}),
            t("erpc", {Ref, return, {ok, [1, 2, 3]}}),
            t("exit reason", {'EXIT', Self, {badarg, [{m, f, 2, [{file, "m.erl"}, {line, 10}]}]}}),
            t("unicode string", "héllo wörld ✓"),
            t("utf8 binary", <<"héllo"/utf8>>),
            t("record-ish", {person, <<"Ann">>, 42, 1.75, [{tags, [a, b]}], #{role => admin}})],
    Ints ++ Floats ++ Atoms ++ Tuples ++ Lists ++ Bins ++ Maps ++ Deep ++ Ids ++ Funs ++ Compressed ++ Real.

%% Incompressible bytes without needing the crypto application.
crypto_free_random() ->
    rand:seed(exsss, {1, 2, 3}),
    << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, 300) >>.
