namespace Patterns.Storage;

/// <summary>The outcome of an append.</summary>
/// <param name="StreamId">The stream appended to.</param>
/// <param name="Version">The stream's version after the append: the version of its last event.</param>
/// <param name="FirstPosition">The global position of the first appended event (0 when nothing was appended).</param>
/// <param name="LastPosition">The global position of the last appended event (0 when nothing was appended).</param>
public readonly record struct AppendResult(string StreamId, long Version, long FirstPosition, long LastPosition);
