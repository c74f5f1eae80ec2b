using System.Globalization;

namespace Patterns.Storage;

/// <summary>
/// The version a stream must be at for an append or delete to succeed. Stream versions are one-based: the
/// first event of a stream has version 1, and a stream with no events is at version 0.
/// </summary>
public readonly record struct ExpectedVersion
{
    private const long AnyValue = -1;
    private const long StreamExistsValue = -2;

    private ExpectedVersion(long value) => Value = value;

    /// <summary>Gets an expectation that always holds: the append never conflicts.</summary>
    public static ExpectedVersion Any => new(AnyValue);

    /// <summary>Gets an expectation that the stream has no events yet.</summary>
    public static ExpectedVersion NoStream => new(0);

    /// <summary>Gets an expectation that the stream has at least one event.</summary>
    public static ExpectedVersion StreamExists => new(StreamExistsValue);

    /// <summary>Gets the raw value: a version (0 or more), -1 for <see cref="Any"/>, -2 for <see cref="StreamExists"/>.</summary>
    public long Value { get; }

    /// <summary>Gets whether this is <see cref="Any"/>.</summary>
    public bool IsAny => Value == AnyValue;

    /// <summary>Gets whether this is <see cref="StreamExists"/>.</summary>
    public bool IsStreamExists => Value == StreamExistsValue;

    /// <summary>Gets whether this names an exact version (including 0, which is <see cref="NoStream"/>).</summary>
    public bool IsExact => Value >= 0;

    /// <summary>Creates an expectation that the stream is exactly at <paramref name="version"/>.</summary>
    /// <param name="version">The stream's current version; 0 means the stream has no events.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="version"/> is negative.</exception>
    public static ExpectedVersion Exact(long version)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(version);
        return new ExpectedVersion(version);
    }

    /// <summary>Gets whether a stream at <paramref name="currentVersion"/> satisfies this expectation.</summary>
    /// <param name="currentVersion">The stream's current version (0 when it has no events).</param>
    public bool IsSatisfiedBy(long currentVersion) => Value switch
    {
        AnyValue => true,
        StreamExistsValue => currentVersion > 0,
        _ => currentVersion == Value,
    };

    /// <summary>
    /// Gets whether an append with this expectation, whose events are all stored already (in order, with consecutive
    /// versions from <paramref name="firstStoredVersion"/>), is an exact retry of the append that stored them: an
    /// exact version (including <see cref="NoStream"/>) must put the events right after it; <see cref="Any"/> and
    /// <see cref="StreamExists"/> accept the place where they are. Every store decides retries with this, so they agree.
    /// </summary>
    /// <param name="firstStoredVersion">The stream version of the first of the append's events as stored (1 or more).</param>
    public bool IsRetryAt(long firstStoredVersion) => IsAny || IsStreamExists || Value == firstStoredVersion - 1;

    /// <inheritdoc />
    public override string ToString() => Value switch
    {
        AnyValue => "Any",
        StreamExistsValue => "StreamExists",
        0 => "NoStream",
        _ => Value.ToString(CultureInfo.InvariantCulture),
    };
}
