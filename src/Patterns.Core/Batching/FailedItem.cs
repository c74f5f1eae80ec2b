namespace Patterns.Batching;

/// <summary>An item that still failed after its retries and was dead-lettered by an in-process batcher.</summary>
/// <typeparam name="T">The item type.</typeparam>
/// <param name="Item">The item.</param>
/// <param name="Exception">The last failure.</param>
/// <param name="Attempts">How many times the handler saw the item.</param>
/// <param name="Batcher">The name of the batcher.</param>
/// <param name="FailedAt">When it was dead-lettered, from the batcher's <see cref="TimeProvider"/>.</param>
public sealed record FailedItem<T>(T Item, Exception Exception, int Attempts, string Batcher, DateTimeOffset FailedAt);
