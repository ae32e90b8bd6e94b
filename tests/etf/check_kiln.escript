#!/usr/bin/env escript
%% -*- erlang -*-
%% erl's verdict on Kiln's encodings of the corpus: each must decode to a
%% term =:= the one OTP encoded (this is the proof for hashed maps, whose
%% OTP bytes are not canonical, and a second check for everything else).
%%
%% Record format: NameLen:16, Name, OtpLen:32, Otp, KilnLen:32, Kiln.
-mode(compile).

main([In]) ->
    {ok, Bin} = file:read_file(In),
    {N, Bad} = check(Bin, 0, 0),
    io:format("erl checked ~b Kiln encodings: ~b equal, ~b different~n", [N, N - Bad, Bad]),
    case {N, Bad} of
        {0, _} -> io:format(standard_error, "no records in ~s~n", [In]), halt(1);
        {_, 0} -> halt(0);
        _ -> halt(1)
    end;
main(_) ->
    io:format(standard_error, "usage: check_kiln.escript KILN_OUT.bin~n", []),
    halt(2).

check(<<>>, N, Bad) -> {N, Bad};
check(<<NL:16, Name:NL/binary, OL:32, Otp:OL/binary, KL:32, Kiln:KL/binary, Rest/binary>>, N, Bad) ->
    Want = binary_to_term(Otp),
    Ok = try binary_to_term(Kiln) =:= Want
         catch C:E -> io:format("  ~ts: erl cannot decode Kiln's bytes: ~p:~p~n", [Name, C, E]), false
         end,
    case Ok of
        true -> check(Rest, N + 1, Bad);
        false ->
            io:format("  ~ts: Kiln's encoding decodes to a different term~n", [Name]),
            check(Rest, N + 1, Bad + 1)
    end.
