using System.ComponentModel.DataAnnotations;

namespace Patterns.InMemory;

/// <summary>Options for the in-memory transport.</summary>
public sealed class InMemoryTransportOptions
{
    /// <summary>Gets or sets the largest serialized payload accepted, in bytes. Bodies passed by reference are not measured.</summary>
    /// <value>Default 4 MiB.</value>
    [Range(1, int.MaxValue)]
    public int MaxPayloadBytes { get; set; } = 4 * 1024 * 1024;
}
