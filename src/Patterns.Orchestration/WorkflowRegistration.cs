namespace Patterns.Orchestration;

/// <summary>
/// Declares the signals, updates and queries a workflow handles, with their types, so that the host checks at start that
/// the serializer can write and read each of them (under NativeAOT or trimming: that the JsonSerializerContext has them).
/// </summary>
/// <remarks>
/// Declarations are checked, not required: an undeclared signal, update or query still works, and under NativeAOT fails
/// only when it is used. Declare them to find a missing <c>[JsonSerializable]</c> when the host starts instead.
/// </remarks>
public sealed class WorkflowRegistration
{
    internal List<(string Kind, string Name, string Role, Type Type)> Types { get; } = [];

    /// <summary>Declares a signal (<see cref="WorkflowContext.WaitForSignalAsync{T}(string, CancellationToken)"/>).</summary>
    /// <typeparam name="TPayload">The signal's payload type.</typeparam>
    /// <param name="name">The signal's name.</param>
    /// <returns>This registration.</returns>
    public WorkflowRegistration Signal<TPayload>(string name) => Add("signal", name, "payload", typeof(TPayload));

    /// <summary>Declares an update (<see cref="WorkflowContext.SetUpdateHandler{TArgument, TResult}"/>).</summary>
    /// <typeparam name="TArgument">The argument type.</typeparam>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="name">The update's name.</param>
    /// <returns>This registration.</returns>
    public WorkflowRegistration Update<TArgument, TResult>(string name) =>
        Add("update", name, "argument", typeof(TArgument)).Add("update", name, "result", typeof(TResult));

    /// <summary>Declares a query (<see cref="WorkflowContext.SetQueryHandler{TResult}"/>).</summary>
    /// <typeparam name="TResult">The query's result type.</typeparam>
    /// <param name="name">The query's name.</param>
    /// <returns>This registration.</returns>
    public WorkflowRegistration Query<TResult>(string name) => Add("query", name, "result", typeof(TResult));

    private WorkflowRegistration Add(string kind, string name, string role, Type type)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Types.Add((kind, name, role, type));
        return this;
    }
}
