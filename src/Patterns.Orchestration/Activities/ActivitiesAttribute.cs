namespace Patterns.Orchestration;

/// <summary>
/// Marks a class whose public methods that return a task are activities. <c>o.AddActivitiesFromAssembly()</c>, generated at
/// compile time by the Patterns source generator, registers each of them (named after the method, without an <c>Async</c>
/// suffix) with a direct call: no reflection at run time, so it is safe under trimming and NativeAOT. A method takes at
/// most one input, plus an optional <see cref="ActivityContext"/> and <see cref="System.Threading.CancellationToken"/>.
/// The class is resolved from each attempt's DI scope (or created with its constructor's services).
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class ActivitiesAttribute : Attribute;
