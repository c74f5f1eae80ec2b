using System.Globalization;
using System.Runtime.CompilerServices;

namespace Patterns.Etl;

/// <summary>How the holding stages measure what they hold against a byte budget.</summary>
internal static class EtlMemory
{
    /// <summary>The bytes a hash-table entry costs beyond its key and value (hash code, link, references).</summary>
    public const long EntryOverhead = 32;

    /// <summary>
    /// The measure of a value: the caller's, or a default for strings (24 + 2 bytes a character) and types without
    /// references (their size); any other type needs the caller's measure.
    /// </summary>
    public static Func<TValue, long> SizeOf<TValue>(Func<TValue, long>? size, string stage, string parameter)
    {
        if (size is not null)
        {
            return size;
        }

        if (typeof(TValue) == typeof(string))
        {
            return static value => value is string text ? 24 + (2L * text.Length) : 0;
        }

        if (!RuntimeHelpers.IsReferenceOrContainsReferences<TValue>())
        {
            long fixedSize = Unsafe.SizeOf<TValue>();
            return _ => fixedSize;
        }

        throw new ArgumentException(
            $"{stage} has a byte budget, but cannot measure a {typeof(TValue).Name} by itself (only strings and types without references): pass {parameter}.",
            parameter[..parameter.IndexOf(':', StringComparison.Ordinal)]);
    }

    public static void CheckBudget(long? maxBytes, string stage, string parameter)
    {
        if (maxBytes is < 1)
        {
            throw new ArgumentOutOfRangeException(parameter, maxBytes, $"{stage}'s byte budget ({parameter}) must be at least 1 byte.");
        }
    }

    public static EtlMemoryBudgetExceededException Exceeded(EtlRun run, string stage, string parameter, long maxBytes, long held, long entries, string what, string advice) =>
        new(string.Create(
            CultureInfo.InvariantCulture,
            $"ETL job '{run.Job}' stopped: the {stage} stage would hold {entries:N0} {what} in about {held:N0} bytes, more than its memory budget of {maxBytes:N0} bytes ({parameter}). {advice}"))
        {
            Stage = stage,
            MaxBytes = maxBytes,
        };
}

/// <summary>A holding stage (<c>DistinctBy</c>, <c>Aggregate</c>, a join's build side) needed more memory than its byte budget.</summary>
public sealed class EtlMemoryBudgetExceededException : InvalidOperationException
{
    /// <summary>Initializes a new instance of the <see cref="EtlMemoryBudgetExceededException"/> class.</summary>
    public EtlMemoryBudgetExceededException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlMemoryBudgetExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlMemoryBudgetExceededException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlMemoryBudgetExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public EtlMemoryBudgetExceededException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the stage that ran out of budget: <c>DistinctBy</c>, <c>Aggregate</c>, <c>OrderBy</c> or <c>Join</c>.</summary>
    public string Stage { get; init; } = string.Empty;

    /// <summary>Gets the stage's budget in bytes (0 for a sort bounded in rows only).</summary>
    public long MaxBytes { get; init; }
}
