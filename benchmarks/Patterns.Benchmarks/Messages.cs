namespace Patterns.Benchmarks;

/// <summary>A pub/sub message: a small class, allocated once per publish.</summary>
public sealed class Ping
{
    public Ping(int sequence) => Sequence = sequence;

    public int Sequence { get; }
}

/// <summary>A queue message: a small class, allocated once per send.</summary>
public sealed class Job
{
    public Job(int sequence) => Sequence = sequence;

    public int Sequence { get; }
}

/// <summary>A request.</summary>
public sealed record Req(int Id);

/// <summary>A response.</summary>
public sealed record Resp(int Id);
