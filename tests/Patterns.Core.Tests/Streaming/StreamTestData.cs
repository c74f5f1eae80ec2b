using Patterns.Streaming;

namespace Patterns.Core.Tests.Streaming;

public sealed record Click(string User, DateTimeOffset At, int Value = 1);

internal static class T
{
    public static readonly DateTimeOffset Zero = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static DateTimeOffset S(double seconds) => Zero.AddSeconds(seconds);

    public static Click C(string user, double seconds, int value = 1) => new(user, S(seconds), value);

    public static (string Key, double Start, double End, long Value) Row(WindowResult<string, long> r) =>
        (r.Key, (r.Start - Zero).TotalSeconds, (r.End - Zero).TotalSeconds, r.Value);
}
